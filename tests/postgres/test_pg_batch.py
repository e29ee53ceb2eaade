"""Group commit of ``record``: concurrent calls share transactions, each gets its own result."""

from __future__ import annotations

import anyio
import pytest

from kitaru import StorageError
from kitaru.storage._pg_batch import Lease, WriteBatcher, _Call
from kitaru.storage.base import JournalEntry, RunPatch, RunRecord
from kitaru.storage.postgres import PostgresStore
from tests.postgres._proxy import TcpProxy, via

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

T0 = 1_700_000_000.0


def run(run_id: str, status: str = "running") -> RunRecord:
    return RunRecord(id=run_id, flow="f", status=status, created_at=T0, updated_at=T0)


def entry(run_id: str, position: int, status: str = "completed") -> JournalEntry:
    return JournalEntry(run_id, position, "step", "checkpoint", status, 1, T0, 0.1, b"1")


async def record_all(
    store: PostgresStore, calls: list[tuple[list[JournalEntry], RunPatch | None]]
) -> list[bool | BaseException]:
    """Run the calls concurrently (the first one leads); each one's result or error."""
    results: list[bool | BaseException] = [False] * len(calls)

    async def one(index: int) -> None:
        entries, patch = calls[index]
        try:
            results[index] = await store.record(entries, patch)
        except StorageError as exc:
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(len(calls)):
            tg.start_soon(one, index)
    return results


def batcher(store: PostgresStore) -> WriteBatcher:
    assert store._records is not None
    return store._records


async def test_concurrent_records_share_transactions(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        ids = [f"r{i}" for i in range(40)]
        for run_id in ids:
            await store.create_run(run(run_id))
        calls: list[tuple[list[JournalEntry], RunPatch | None]] = []
        for i, run_id in enumerate(ids):
            patch = RunPatch(run_id, T0 + 1, add_input_tokens=3) if i % 2 else None
            calls.append(([entry(run_id, 0)], patch))
        assert await record_all(store, calls) == [True] * len(ids)
        assert batcher(store).batches >= 1
        for i, run_id in enumerate(ids):
            assert await store.load_journal(run_id) == [entry(run_id, 0)]
            stored = await store.get_run(run_id)
            assert stored is not None
            assert stored.input_tokens == (3 if i % 2 else 0)


async def test_a_completed_entry_is_never_replaced_in_a_batch(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.create_run(run("r"))
        await store.record([entry("r", 0)])
        calls: list[tuple[list[JournalEntry], RunPatch | None]] = [
            ([entry("r", 9)], None),  # leads
            ([entry("r", 0, status="failed")], None),
            ([entry("r", 1, status="failed")], None),
            ([entry("r", 1)], None),
            ([entry("r", 0, status="failed")], RunPatch("r", T0 + 1)),
        ]
        assert await record_all(store, calls) == [True] * len(calls)
        journal = {e.position: e for e in await store.load_journal("r")}
        assert journal[0] == entry("r", 0)
        assert journal[1] == entry("r", 1)


async def test_a_refused_patch_fails_only_its_own_call(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        ids = [f"r{i}" for i in range(20)]
        for i, run_id in enumerate(ids):
            await store.create_run(run(run_id, "completed" if i % 3 == 1 else "running"))
        calls: list[tuple[list[JournalEntry], RunPatch | None]] = [
            ([entry(run_id, 0)], RunPatch(run_id, T0 + 1, expect=("running",))) for run_id in ids
        ]
        results = await record_all(store, calls)
        assert results == [i % 3 != 1 for i in range(len(ids))]
        for i, run_id in enumerate(ids):
            assert await store.load_journal(run_id) == ([] if i % 3 == 1 else [entry(run_id, 0)])


async def test_an_unknown_run_fails_only_its_own_caller(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        ids = [f"r{i}" for i in range(10)]
        for run_id in ids:
            await store.create_run(run(run_id))
        calls: list[tuple[list[JournalEntry], RunPatch | None]] = [
            ([entry(run_id, 0)], RunPatch(run_id, T0 + 1) if i % 2 else None)
            for i, run_id in enumerate(ids)
        ]
        calls += [([entry("nope", 0)], None), ([entry("nada", 0)], RunPatch("nada", T0 + 1))]
        results = await record_all(store, calls)
        assert results[: len(ids)] == [True] * len(ids)
        assert isinstance(results[-2], StorageError)
        assert "unknown run nope" in str(results[-2])
        assert results[-1] is False  # a patch of a missing run refuses, as record() does alone
        assert batcher(store).fallbacks >= 1
        for run_id in ids:
            assert await store.load_journal(run_id) == [entry(run_id, 0)]


async def test_lost_answer_to_a_batch_applies_nothing_twice(
    proxy: TcpProxy, postgres_url: str
) -> None:
    url = via(proxy, postgres_url) + "&pool_min=1&pool_max=1&listen=off"
    async with PostgresStore(url) as store:
        ids = ["warm1", "warm2", "r1", "r2", "r3"]
        for run_id in ids:
            await store.create_run(run(run_id))
        group = batcher(store)

        async def unused(uncertain: bool, lease: Lease | None) -> bool:
            raise AssertionError("the test runs the calls itself")

        def calls(run_ids: list[str]) -> list[_Call[bool]]:
            return [
                _Call(
                    unused,
                    [entry(run_id, 0)],
                    RunPatch(
                        run_id, T0 + 1, status="waiting", add_input_tokens=5, expect=("running",)
                    ),
                )
                for run_id in run_ids
            ]

        writer = group._writer
        await group._send(calls(["warm1", "warm2"]), writer)  # prepares the statement
        assert writer.conn is not None
        proxy.cut_next_response()
        cut = calls(["r1", "r2", "r3"])
        await group._send(cut, writer)
        assert writer.conn.is_closed()  # the connection did break
        assert [call.rerun for call in cut] == [True] * 3  # the outcome is unknown
        for call in cut:
            # A blind retry would find status "waiting", refuse, and report False.
            assert await store._record_alone(call.entries, call.patch, True, None) is True
        for run_id in ("r1", "r2", "r3"):
            stored = await store.get_run(run_id)
            assert stored is not None
            assert (stored.status, stored.input_tokens) == ("waiting", 5)
            assert await store.load_journal(run_id) == [entry(run_id, 0)]


async def test_a_cancelled_call_leaves_the_next_one_working(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.create_run(run("r"))
        for position in range(30):
            with anyio.move_on_after(position * 0.00005):
                await store.record([entry("r", position)], RunPatch("r", T0 + 1))
            assert await store.record([entry("r", 100 + position)], RunPatch("r", T0 + 2))
        journal = {e.position for e in await store.load_journal("r")}
        assert {100 + p for p in range(30)} <= journal
