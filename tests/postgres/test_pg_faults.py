"""Connection faults: nothing is lost or done twice.

- a statement commits but its answer never arrives (the connection breaks in
  between): the retried call reports success and writes nothing twice;
- the store's connections are terminated by the server (pg_terminate_backend)
  again and again while flows run;
- the server goes away (a proxy stops forwarding and refuses connections) in
  the middle of running flows, and comes back.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.storage import Message, RunPatch
from kitaru.storage.postgres import PostgresStore
from tests.postgres import _server as pg
from tests.postgres._proxy import TcpProxy, via
from tests.storage._records import T0, make_entry, make_run

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

T = TypeVar("T")

# -- the answer of a committed statement is lost ----------------------------------------


@pytest.fixture
async def cut_store(proxy: TcpProxy, postgres_url: str) -> PostgresStore:
    # One pooled connection, so statements are prepared (warm) on it before the
    # cut and the cut hits the execution itself; no listener connection.
    url = via(proxy, postgres_url) + "&pool_min=1&pool_max=1&listen=off"
    return PostgresStore(url)


async def cut_during(proxy: TcpProxy, call: Awaitable[T]) -> T:
    accepted = proxy.accepted
    proxy.cut_next_response()
    result = await call
    assert proxy.accepted == accepted + 1  # the connection did break and was replaced
    return result


async def test_lost_answer_to_record_does_not_apply_its_patch_twice(
    proxy: TcpProxy, cut_store: PostgresStore
) -> None:
    async with cut_store as store:
        for run_id in ("warm", "r1"):
            await store.create_run(make_run(run_id))
        patch = RunPatch("warm", T0 + 1, status="waiting", add_input_tokens=5)
        assert await store.record([make_entry("warm", 0)], patch)
        patch = RunPatch("r1", T0 + 1, status="waiting", add_input_tokens=5, expect=("running",))
        # A blind retry would find status "waiting", refuse, and report False.
        assert await cut_during(proxy, store.record([make_entry("r1", 0)], patch)) is True
        stored = await store.get_run("r1")
        assert stored is not None
        assert (stored.status, stored.input_tokens) == ("waiting", 5)
        assert await store.load_journal("r1") == [make_entry("r1", 0)]


async def test_lost_answer_to_update_run_returns_the_updated_run(
    proxy: TcpProxy, cut_store: PostgresStore
) -> None:
    async with cut_store as store:
        for run_id in ("warm", "r1"):
            await store.create_run(make_run(run_id))
        await store.update_run(RunPatch("warm", T0 + 1, status="completed", release=True))
        patch = RunPatch("r1", T0 + 1, status="completed", release=True)
        updated = await cut_during(proxy, store.update_run(patch))
        assert updated == make_run("r1", status="completed", updated_at=T0 + 1)


async def test_lost_answer_to_post_stores_one_message(
    proxy: TcpProxy, cut_store: PostgresStore
) -> None:
    async with cut_store as store:
        await store.post(Message(0, "r1", "t", b"1", T0))
        stored, created = await cut_during(proxy, store.post(Message(0, "r1", "t", b"2", T0)))
        assert created is True
        assert [m.payload for m in await store.messages_after(0)] == [b"1", b"2"]
        assert stored.payload == b"2"


async def test_lost_answer_to_create_run_reports_created(
    proxy: TcpProxy, cut_store: PostgresStore
) -> None:
    async with cut_store as store:
        await store.create_run(make_run("warm"))
        assert await cut_during(proxy, store.create_run(make_run("r1"))) == (make_run("r1"), True)


async def test_lost_answer_to_reset_journal_reports_done(
    proxy: TcpProxy, cut_store: PostgresStore
) -> None:
    async with cut_store as store:
        for run_id in ("warm", "r1"):
            await store.create_run(make_run(run_id))
            await store.record([make_entry(run_id, 0)])
        await store.reset_journal(RunPatch("warm", T0 + 1, input=b"2"))
        assert await cut_during(proxy, store.reset_journal(RunPatch("r1", T0 + 1, input=b"2")))
        assert await store.load_journal("r1") == []


async def test_lost_answer_to_claim_due_strands_no_run(
    proxy: TcpProxy, cut_store: PostgresStore
) -> None:
    async with cut_store as store:
        for run_id in ("a", "b"):
            await store.create_run(make_run(run_id, status="sleeping", wake_at=T0))
        assert await store.claim_due(["other"], "me", now=T0, lease_until=T0 + 30) == []
        claimed = await cut_during(
            proxy, store.claim_due(["flow"], "me", now=T0, lease_until=T0 + 30)
        )
        assert [r.id for r in claimed] == ["a", "b"]


# -- flows under fire ----------------------------------------------------------------------

side_effects: Counter[tuple[str, int]] = Counter()
#: The last checkpoint of each run waits for this, so every fault hits runs mid-way.
faults_over: anyio.Event | None = None


@checkpoint
async def step(tag: str, i: int, last: bool = False) -> int:
    side_effects[(tag, i)] += 1
    await anyio.sleep(0.005)
    if last and faults_over is not None:
        await faults_over.wait()
    return i


@flow
async def many_steps(tag: str, n: int) -> int:
    total = 0
    for i in range(n):
        total += await step(tag, i, last=i == n - 1)
    return total


async def run_flows(url: str, tmp_path: Path, count: int, n: int, faults: object) -> None:
    """Run ``count`` runs of ``many_steps`` while ``faults()`` runs; they finish after it."""
    global faults_over
    side_effects.clear()
    faults_over = anyio.Event()
    async with kitaru.runtime(store=url, artifacts=str(tmp_path / "a")) as rt:
        handles = [await rt.start(many_steps, f"run{k}", n) for k in range(count)]
        await faults()  # type: ignore[operator]
        faults_over.set()
        with anyio.fail_after(45):
            for handle in handles:
                assert await handle.result() == sum(range(n))
        for handle in handles:
            assert len(await rt.store.load_journal(handle.id)) == n
    # Every checkpoint's side effect ran exactly once.
    assert sorted(side_effects) == [(f"run{k}", i) for k in range(count) for i in range(n)]
    assert set(side_effects.values()) == {1}


async def test_terminated_connections_lose_and_repeat_nothing(
    postgres_url: str, postgres_server: str, tmp_path: Path
) -> None:
    app = f"kt_kill_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_url}&application_name={app}&pool_max=4"
    rounds = killed = 0

    async def killer() -> None:
        nonlocal rounds, killed
        conn = await pg.admin(postgres_server)
        try:
            for rounds in range(1, 7):
                await anyio.sleep(0.05)
                # The pool's connections every time, the listener's every other time.
                names = [app, f"{app} listener"] if rounds % 2 else [app]
                killed += await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = ANY($1::text[]) AND pid <> pg_backend_pid()",
                    names,
                )
        finally:
            await conn.close()

    await run_flows(url, tmp_path, count=8, n=60, faults=killer)
    assert killed >= rounds


async def test_server_going_away_and_back_loses_and_repeats_nothing(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path
) -> None:
    async def outage() -> None:
        while sum(side_effects.values()) < 40:
            await anyio.sleep(0.005)
        proxy.drop()  # every connection closes; new ones are refused
        await anyio.sleep(1.0)
        await proxy.restore()

    await run_flows(via(proxy, postgres_url), tmp_path, count=6, n=40, faults=outage)
    assert proxy.accepted > 6  # connections were made again after the outage


async def test_a_timed_out_statement_is_cancelled_not_left_to_commit_later(
    postgres_url: str,
) -> None:
    # A pooled write past command_timeout (behind a row lock): asyncpg asks
    # the server to cancel it. Closing the connection at once would abandon
    # that request, and each timed-out attempt would still apply its patch
    # once the lock goes.
    async with PostgresStore(postgres_url + "&command_timeout=0.3&listen=off") as store:
        await store.create_run(make_run("r"))
        patch = RunPatch("r", 2.0, add_input_tokens=7)
        schema = store._settings.schema
        patched = await pg.while_locked(
            postgres_url, schema, "r", 1.0, lambda: store.update_run(patch)
        )
        assert patched is not None
        stored = await store.get_run("r")
        assert stored is not None and stored.input_tokens == 7
