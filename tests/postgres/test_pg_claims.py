"""``claim_orphans``: workers take the runs nobody hosts in one statement, never the same one."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from kitaru.storage.base import RunRecord
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.postgres import _ops as ops

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

T0 = 1_700_000_000.0
NOW = T0 + 100


def run(run_id: str, created: float, **fields: object) -> RunRecord:
    values: dict[str, object] = {
        "id": run_id,
        "flow": "f",
        "status": "running",
        "created_at": created,
        "updated_at": created,
    }
    values.update(fields)
    return RunRecord(**values)  # type: ignore[arg-type]


async def test_claims_exactly_the_runs_nobody_live_hosts(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        claimable = [
            run("unowned", T0 + 1),
            run("dead-owner", T0 + 2, owner="dead", lease_until=NOW + 60),
            run("lapsed", T0 + 3, owner="slow", lease_until=NOW - 1),
            run("unowned-2", T0 + 4),
        ]
        others = [
            run("live-owner", T0 + 5, owner="alive", lease_until=NOW + 60),
            run("waiting", T0 + 6, status="waiting"),
            run("completed", T0 + 7, status="completed"),
            run("other-flow", T0 + 8, flow="g"),
        ]
        for record in [*others, *reversed(claimable)]:
            await store.create_run(record)
        claimed = await store.claim_orphans(
            ["f"], "w1", now=NOW, lease_until=NOW + 30, dead_owners=["dead"]
        )
        assert [r.id for r in claimed] == [r.id for r in claimable]  # oldest first
        assert all((r.owner, r.lease_until) == ("w1", NOW + 30) for r in claimed)
        for record in claimable:
            stored = await store.get_run(record.id)
            assert stored is not None and stored.owner == "w1"
        for record in others:
            assert await store.get_run(record.id) == record  # untouched
        # Claimed runs are hosted now: a second sweep finds nothing.
        assert await store.claim_orphans(["f"], "w2", now=NOW, lease_until=NOW + 30) == []
        assert await store.claim_orphans([], "w2", now=NOW, lease_until=NOW + 30) == []


async def test_workers_sweeping_together_split_a_burst(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        ids = [f"r{i:03}" for i in range(200)]
        for i, run_id in enumerate(ids):
            await a.create_run(run(run_id, T0 + i))
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
        await store.create_run(run("mine-already", T0 + 1, owner="w1", lease_until=NOW + 30))
        await store.create_run(run("free", T0 + 2))
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
