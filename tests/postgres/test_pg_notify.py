"""Wake-ups through LISTEN/NOTIFY, and workers sharing one database."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import kitaru
from kitaru import flow
from kitaru.storage import Message, RunRecord
from kitaru.storage.postgres import PostgresStore
from tests.postgres import _server as pg

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

T0 = 1_700_000_000.0
#: Far above every latency asserted below: only a NOTIFY can wake the runtime in time.
NO_POLLING = 60.0


@flow
async def approval() -> bool:
    first: bool = await kitaru.wait(schema=bool)
    second: bool = await kitaru.wait(schema=bool)
    return first and second


@flow
async def napper() -> str:
    await kitaru.sleep(1.0)
    return "rested"


def pg_store(rt: kitaru.Runtime) -> PostgresStore:
    store = rt.store
    assert isinstance(store, PostgresStore)
    return store


async def until(predicate: object, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def until_status(store: PostgresStore, run_id: str, status: str) -> None:
    with anyio.fail_after(5):
        while True:
            record = await store.get_run(run_id)
            if record is not None and record.status == status:
                return
            await anyio.sleep(0.005)


async def answer(poster: PostgresStore, run_id: str) -> float:
    """Post ``true`` to the run from another store; returns when it was committed."""
    await poster.post(Message(0, run_id, "input", b"true", time.time()))
    return time.monotonic()


async def test_a_message_from_another_process_wakes_its_run_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    async with (
        kitaru.runtime(store=postgres_url, artifacts=str(tmp_path), poll_interval=NO_POLLING) as rt,
        PostgresStore(postgres_url) as poster,
    ):
        run = await rt.start(approval)
        for answered in (1, 2):
            await until_status(poster, run.id, "waiting")
            sent = await answer(poster, run.id)
            # The run consumes the message into its journal once it is woken.
            while len(await poster.load_journal(run.id)) < answered:
                assert time.monotonic() - sent < 2.0, "the message did not wake the run"
                await anyio.sleep(0.002)
        assert await run.result() is True


async def test_the_listener_reconnects_after_its_connection_is_killed(
    postgres_url: str, postgres_server: str, tmp_path: Path
) -> None:
    async with (
        kitaru.runtime(store=postgres_url, artifacts=str(tmp_path), poll_interval=NO_POLLING) as rt,
        PostgresStore(postgres_url) as poster,
    ):
        store = pg_store(rt)
        run = await rt.start(approval)
        await until(lambda: store.listener_pid is not None)
        first_pid = store.listener_pid
        conn = await pg.admin(postgres_server)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        finally:
            await conn.close()
        await until(lambda: store.listener_pid not in (None, first_pid))
        await answer(poster, run.id)
        await answer(poster, run.id)
        with anyio.fail_after(2.0):
            assert await run.result() is True


async def test_a_deadline_released_by_a_closing_worker_is_taken_over_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {"store": postgres_url, "poll_interval": NO_POLLING}
    async with kitaru.runtime(artifacts=str(tmp_path / "b"), flows=[napper], **settings) as rt_b:
        async with kitaru.runtime(artifacts=str(tmp_path / "a"), **settings) as rt_a:
            run = await rt_a.start(napper)
            await until_status(pg_store(rt_a), run.id, "sleeping")
        # rt_a released the sleeping run on closing and said so with a NOTIFY:
        # rt_b's timer service takes the deadline at once, not at its next rescan (5 s).
        closed = time.monotonic()
        with anyio.fail_after(3.5):
            assert await rt_b.result(run.id) == "rested"
        assert time.monotonic() - closed < 3.5


async def test_change_token_sees_other_processes_without_a_query(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as watcher, PostgresStore(postgres_url) as writer:
        token = await watcher.change_token()
        assert await watcher.change_token() == token
        await writer.post(Message(0, "r1", "t", b"1", T0))
        with anyio.fail_after(2):
            while await watcher.change_token() == token:
                await anyio.sleep(0.002)


async def test_without_listen_every_wait_reports_a_change(postgres_url: str) -> None:
    async with PostgresStore(f"{postgres_url}&listen=off") as store:
        assert store.listener_pid is None
        assert await store.wait_for_change(0, 0.01) != 0
        first = await store.change_token()
        assert await store.change_token() != first  # callers poll


async def test_message_ids_become_visible_in_order(postgres_url: str) -> None:
    # Posts from several stores at once, and a poller following "ids above the
    # last one seen": none may be skipped because a lower id committed later.
    posters = [PostgresStore(postgres_url) for _ in range(4)]
    seen: list[int] = []
    try:
        for store in posters:
            await store.open()
        async with PostgresStore(postgres_url) as poller:
            done = False

            async def post_many(store: PostgresStore, k: int) -> None:
                for i in range(40):
                    await store.post(Message(0, f"r{k}", "t", str(i).encode(), T0))

            async def follow() -> None:
                last = 0
                while True:
                    stop = done  # read before the query: a last full pass after the posts
                    for message in await poller.messages_after(last):
                        seen.append(message.id)
                        last = message.id
                    if stop:
                        return
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                async with anyio.create_task_group() as posting:
                    for k, store in enumerate(posters):
                        posting.start_soon(post_many, store, k)
                done = True
            everything = [m.id for m in await poller.messages_after(0, limit=1000)]
    finally:
        for store in posters:
            await store.aclose()
    assert len(everything) == 160
    assert seen == everything


async def test_workers_split_due_runs_without_overlap(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        for i in range(100):
            await a.create_run(RunRecord(f"r{i:03}", "flow", "sleeping", T0, T0, wake_at=T0 - i))
        claimed: dict[str, list[str]] = {}

        async def claim(name: str, store: PostgresStore) -> None:
            got: list[str] = []
            while True:
                batch = await store.claim_due(["flow"], name, now=T0, lease_until=T0 + 30, limit=7)
                if not batch:
                    break
                got += [r.id for r in batch]
            claimed[name] = got

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim, "a", a)
            tg.start_soon(claim, "b", b)
        assert not set(claimed["a"]) & set(claimed["b"])
        assert sorted(claimed["a"] + claimed["b"]) == [f"r{i:03}" for i in range(100)]
        for name, ids in claimed.items():
            for run_id in ids:
                record = await a.get_run(run_id)
                assert record is not None
                assert record.owner == name


async def test_closing_while_the_listener_connects_leaves_no_asyncio_noise(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A runtime that closes while its LISTEN connection is being set up
    # cancels asyncpg's handshake; half-way through, that used to leave a
    # future whose "unexpected connection_lost()" asyncio printed at exit.
    for attempt in range(24):
        store = PostgresStore(postgres_url)
        await store.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.wait_for_change, 0, 5.0)
            await anyio.sleep(0.0005 * (attempt % 8))
            tg.cancel_scope.cancel()
        await store.aclose()
    await anyio.sleep(0.05)
    gc.collect()
    await anyio.lowlevel.checkpoint()
    noise = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert noise == []
