"""``claim_orphans`` on PostgreSQL: workers sweeping together never take the same run.

What every BulkClaims store must do is in the contract suite
(``tests/storage/test_contract.py``); these tests add what only a shared
database shows: concurrent sweeps, and the retry after a lost reply.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from kitaru.storage.postgres import PostgresStore
from kitaru.storage.postgres import _ops as ops
from tests.storage._records import T0, make_run

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

NOW = T0 + 100


async def test_workers_sweeping_together_split_a_burst(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        ids = [f"r{i:03}" for i in range(200)]
        for i, run_id in enumerate(ids):
            await a.create_run(make_run(run_id, flow="f", created_at=T0 + i))
        taken: dict[str, list[str]] = {"a": [], "b": []}

        async def sweep(name: str, store: PostgresStore) -> None:
            while True:
                batch = await store.claim_orphans(
                    ["f"], name, now=NOW, lease_until=NOW + 30, limit=7
                )
                assert len(batch) <= 7
                if not batch:
                    return
                taken[name].extend(r.id for r in batch)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sweep, "a", a)
            tg.start_soon(sweep, "b", b)
        assert sorted(taken["a"] + taken["b"]) == ids  # every run, once
        assert not set(taken["a"]) & set(taken["b"])
        for name, claimed in taken.items():
            for run_id in claimed:
                stored = await a.get_run(run_id)
                assert stored is not None and stored.owner == name


async def test_a_retry_after_a_lost_reply_returns_what_the_first_attempt_claimed(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.create_run(
            make_run("mine-already", flow="f", created_at=T0 + 1, owner="w1", lease_until=NOW + 30)
        )
        await store.create_run(make_run("free", flow="f", created_at=T0 + 2))
        first = await store.claim_orphans(["f"], "w1", now=NOW, lease_until=NOW + 30)
        assert [r.id for r in first] == ["free"]
        # What the store runs in "uncertain" mode after a lost connection:
        # runs already leased to the caller come back too.
        assert store._pool is not None
        async with store._pool.acquire() as conn:
            again = await ops.claim_unhosted(
                conn, store._cx, "orphans", ["f"], "w1", NOW, NOW + 30, [], 1000, True
            )
        assert sorted(r.id for r in again) == ["free", "mine-already"]
