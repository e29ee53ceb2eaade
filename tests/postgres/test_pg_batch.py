"""Group commit of ``record``: concurrent calls share transactions, each gets its own result."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable

import anyio
import pytest

from kitaru import StorageError
from kitaru.storage import JournalEntry, RunPatch, RunRecord
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.postgres import _ops as ops
from kitaru.storage.postgres._batch import Lease, WriteBatcher, _Call
from tests.postgres._proxy import Pooler, TcpProxy, via
from tests.postgres._server import while_locked

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
        # The batch statement itself succeeds: it skips the entry of the
        # missing run and reports it, and only that call runs again alone.
        assert batcher(store).fallbacks == 0
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


async def patch_while_locked(store: PostgresStore, postgres_url: str) -> None:
    """Record a patched entry of run "r" while its row is locked for a second; applied once."""
    patch = RunPatch("r", T0 + 1, add_input_tokens=7)

    def record() -> Awaitable[bool]:
        return store.record([entry("r", 1)], patch)

    locked = while_locked(postgres_url, store._settings.schema, "r", 1.0, record)
    assert await locked is True
    stored = await store.get_run("r")
    assert stored is not None and stored.input_tokens == 7


async def test_a_statement_past_command_timeout_is_cancelled_and_retried(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # On the leader's connection the server keeps command_timeout (its
    # statement_timeout): a patch blocked on a locked run row is cancelled,
    # rolled back and retried until the lock goes, and applied once.
    async with PostgresStore(postgres_url + "&command_timeout=0.3&listen=off") as store:
        await store.create_run(run("r"))
        await store.record([entry("r", 0)])  # opens the leader's connection
        await patch_while_locked(store, postgres_url)
        assert "canceling statement due to statement timeout" in caplog.text
        assert [e.position for e in await store.load_journal("r")] == [0, 1]


async def test_behind_a_pooler_the_timeout_falls_back_to_asyncpgs(
    pooler: Pooler, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # PgBouncer refuses statement_timeout as a startup parameter, or (told to
    # ignore it) drops it: the group-commit connections then keep
    # command_timeout with asyncpg, which cancels the statement on the server.
    caplog.set_level("INFO", logger="kitaru.storage.postgres")
    url = via(pooler, postgres_url) + "&command_timeout=0.3&listen=off"
    async with PostgresStore(url) as store:
        await store.create_run(run("r"))
        await store.record([entry("r", 0)])
        assert store._connector.server_timeout is False
        assert "does not keep statement_timeout" in caplog.text
        if pooler.mode == "refuse":
            assert "statement_timeout" in pooler.refused
        await patch_while_locked(store, postgres_url)


async def test_a_statement_with_no_answer_loses_its_connection_and_is_retried(
    proxy: TcpProxy, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A network that died silently: nothing comes back and nothing closes.
    # The leader's watchdog closes the connection; the call is retried,
    # uncertain, on a new one, and applied once.
    url = via(proxy, postgres_url) + "&command_timeout=0.2&listen=off"
    async with PostgresStore(url) as store:
        await store.create_run(run("r"))
        await store.record([entry("r", 0)])  # opens the leader's connection
        first = batcher(store)._writer.conn
        proxy.stall_next_response()
        with anyio.fail_after(20):
            patch = RunPatch("r", T0 + 1, add_input_tokens=7)
            assert await store.record([entry("r", 1)], patch) is True
        assert first is not None and first.is_closed()
        assert "no answer to a statement for 0.4 s" in caplog.text
        stored = await store.get_run("r")
        assert stored is not None and stored.input_tokens == 7
        assert [e.position for e in await store.load_journal("r")] == [0, 1]


async def test_an_existing_entry_takes_the_upsert_path(postgres_url: str) -> None:
    # A checkpoint's entry goes in by plain INSERT; one that exists fails on
    # the key and is upserted (never over a completed one).
    async with PostgresStore(postgres_url) as store:
        await store.create_run(run("r"))
        await store.record([entry("r", 0, status="failed")])
        await store.record([entry("r", 0)])
        await store.record([dataclasses.replace(entry("r", 0), value=b"2")])
        assert await store.load_journal("r") == [entry("r", 0)]
        with pytest.raises(StorageError, match="unknown run nope"):
            await store.record([entry("nope", 0)])


async def test_entries_of_runs_seen_before_skip_the_existence_probe(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as one, PostgresStore(postgres_url) as other:
        await one.create_run(run("r"))
        assert "r" in one._cx.runs_seen  # it created the run
        assert "r" not in other._cx.runs_seen
        await other.record([entry("r", 0)])  # probed, found
        assert "r" in other._cx.runs_seen
        await other.record([entry("r", 1)])  # no probe
        with pytest.raises(StorageError, match="unknown run gone"):
            await other.record([entry("gone", 0)])
        assert "gone" not in other._cx.runs_seen
        assert [e.position for e in await one.load_journal("r")] == [0, 1]


async def test_runs_seen_start_over_past_their_bound(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops, "RUNS_SEEN_MAX", 3)
    async with PostgresStore(postgres_url) as store:
        for i in range(5):
            await store.create_run(run(f"r{i}"))
            assert len(store._cx.runs_seen) <= 3
        for i in range(5):
            await store.record([entry(f"r{i}", 0)])
        for i in range(5):
            assert await store.load_journal(f"r{i}") == [entry(f"r{i}", 0)]


# -- new runs (store._starts) -----------------------------------------------------------


def starts(store: PostgresStore) -> WriteBatcher:
    assert store._starts is not None
    return store._starts


async def create_all(
    store: PostgresStore, runs: list[RunRecord]
) -> list[tuple[RunRecord, bool] | BaseException]:
    """``create_run`` each run concurrently (the first one leads); each one's result or error."""
    results: list[tuple[RunRecord, bool] | BaseException] = [StorageError("not run") for _ in runs]

    async def one(index: int) -> None:
        try:
            results[index] = await store.create_run(runs[index])
        except StorageError as exc:
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(len(runs)):
            tg.start_soon(one, index)
    return results


def full_run(run_id: str, i: int) -> RunRecord:
    """A run with most of its fields set, so a lost or mixed-up column shows."""
    return dataclasses.replace(
        run(run_id, "sleeping" if i % 2 else "running"),
        flow=f"flow{i % 3}",
        created_at=T0 + i,
        updated_at=T0 + i + 0.5,
        input=f"in{i}".encode(),
        owner=f"w{i % 4}",
        lease_until=T0 + 30 + i,
        parent_id=f"parent{i}" if i % 5 == 0 else None,
        wait=b'{"t": 1}' if i % 2 else None,
        wake_at=T0 + 60 + i if i % 2 else None,
        wait_topics="t" if i % 2 else None,
        input_tokens=i,
        output_tokens=2 * i,
        cost_usd=0.25 * i if i % 3 else None,
        metadata=b'{"k": 1}',
        budget=b'{"tokens": 100}' if i % 4 == 0 else None,
    )


async def test_concurrent_new_runs_share_transactions(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        group = starts(store)
        runs = [full_run(f"r{i:02}", i) for i in range(30)]
        results = await create_all(store, runs)
        assert results == [(new, True) for new in runs]
        # The first call ran alone; the others queued behind it and went out together.
        assert group.fallbacks == 0
        assert group.batched >= 2
        assert group.batches < group.batched
        for new in runs:
            assert await store.get_run(new.id) == new


async def test_a_new_run_of_an_existing_id_in_a_batch_reads_the_stored_one(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url) as store:
        old = full_run("old", 1)
        assert await store.create_run(old) == (old, True)
        twins = [
            dataclasses.replace(run("twin"), flow="a", input=b"a"),
            dataclasses.replace(run("twin"), flow="b", input=b"b"),
            dataclasses.replace(run("twin"), flow="b", input=b"b"),  # the same record again
            dataclasses.replace(run("twin"), flow="c", status="sleeping", wake_at=T0 + 5),
        ]
        again = dataclasses.replace(run("old"), flow="other", input=b"other")
        others = [run(f"n{i}") for i in range(5)]
        before = starts(store).batched
        # "lead" runs alone; everything after it queues and goes out in batches.
        results = await create_all(store, [run("lead"), *twins, again, *others])
        assert starts(store).batched - before == len(twins) + 1 + len(others)

        lead_result, twin_results = results[0], results[1 : 1 + len(twins)]
        assert lead_result == (run("lead"), True)
        stored = await store.get_run("twin")
        assert stored is not None
        created = [r for r in twin_results if isinstance(r, tuple) and r[1]]
        assert len(created) == 1
        winner = created[0][0]
        assert winner in twins
        assert stored == winner
        assert sorted(twin_results, key=lambda r: isinstance(r, tuple) and r[1]) == [
            (stored, False)
        ] * (len(twins) - 1) + [(winner, True)]

        assert results[1 + len(twins)] == (old, False)
        assert await store.get_run("old") == old
        assert results[2 + len(twins) :] == [(new, True) for new in others]
        for new in others:
            assert await store.get_run(new.id) == new


# -- run completions (patches without entries) ------------------------------------------


async def test_concurrent_completions_are_batched_and_each_gets_its_answer(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url) as store:
        statuses = ["running", "completed", "running", "failed", "running", "waiting"] * 3
        finishing = [f"c{i:02}" for i in range(len(statuses))]
        originals: dict[str, RunRecord] = {}
        for run_id, status in zip(finishing, statuses, strict=True):
            new = dataclasses.replace(run(run_id, status), owner="w", lease_until=T0 + 30)
            if status == "completed":
                new = dataclasses.replace(new, output=b"earlier")
            originals[run_id] = new
            await store.create_run(new)
        checkpointing = [f"p{i}" for i in range(10)]
        for run_id in checkpointing:
            await store.create_run(run(run_id))

        def completion(run_id: str, i: int) -> RunPatch:
            return RunPatch(
                run_id,
                T0 + 10 + i,
                status="completed",
                output=f"out{i}".encode(),
                release=True,
                expect=("running",),
            )

        calls: list[tuple[list[JournalEntry], RunPatch | None]] = [
            ([entry("p0", 0)], None)  # leads
        ]
        for i, run_id in enumerate(finishing):
            calls.append(([], completion(run_id, i)))
            if i + 1 < len(checkpointing):
                calls.append(([entry(checkpointing[i + 1], 0)], None))
        group = batcher(store)
        before = (group.batched, group.fallbacks)
        results = await record_all(store, calls)

        # Every call but the leader's went out in a batch, and no batch failed.
        assert group.batched - before[0] == len(calls) - 1
        assert group.fallbacks == before[1]
        answers = {
            patch.run_id: result
            for (_, patch), result in zip(calls, results, strict=True)
            if patch is not None
        }
        assert answers == {run_id: r.status == "running" for run_id, r in originals.items()}
        assert [r for (_, patch), r in zip(calls, results, strict=True) if patch is None] == [
            True
        ] * len(checkpointing)
        for i, run_id in enumerate(finishing):
            stored = await store.get_run(run_id)
            original = originals[run_id]
            if original.status == "running":
                assert stored == dataclasses.replace(
                    original,
                    status="completed",
                    output=f"out{i}".encode(),
                    updated_at=T0 + 10 + i,
                    owner=None,
                    lease_until=None,
                )
            else:
                assert stored == original  # refused: nothing changed
            assert await store.load_journal(run_id) == []
        for run_id in checkpointing:
            assert await store.load_journal(run_id) == [entry(run_id, 0)]


# -- calls that would touch a row twice in one statement --------------------------------


async def test_two_guarded_calls_of_one_run_in_a_batch_both_apply(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        for run_id in ("lead", "r", "s", "o0", "o1", "o2"):
            await store.create_run(run(run_id))
        group = batcher(store)
        before = (group.batched, group.fallbacks)
        calls: list[tuple[list[JournalEntry], RunPatch | None]] = [
            ([entry("lead", 0)], None),  # leads; the rest queue behind it
            ([entry("r", 0)], RunPatch("r", T0 + 1, add_input_tokens=2)),
            ([entry("o0", 0)], None),
            ([entry("r", 1)], RunPatch("r", T0 + 2, add_input_tokens=2)),
            ([entry("o1", 0)], RunPatch("o1", T0 + 1, add_output_tokens=1)),
            ([], RunPatch("s", T0 + 1, add_input_tokens=5)),
            ([entry("s", 0)], RunPatch("s", T0 + 2, add_input_tokens=5, add_output_tokens=7)),
            ([entry("o2", 0)], None),
            ([], RunPatch("s", T0 + 3, add_cost_usd=0.5)),
        ]
        assert await record_all(store, calls) == [True] * len(calls)
        assert group.batched - before[0] == len(calls) - 1
        assert group.fallbacks == before[1]

        r = await store.get_run("r")
        assert r is not None
        assert r.input_tokens == 4
        assert await store.load_journal("r") == [entry("r", 0), entry("r", 1)]
        s = await store.get_run("s")
        assert s is not None
        assert (s.input_tokens, s.output_tokens, s.cost_usd) == (10, 7, 0.5)
        assert await store.load_journal("s") == [entry("s", 0)]
        o1 = await store.get_run("o1")
        assert o1 is not None
        assert o1.output_tokens == 1
        for run_id in ("lead", "o0", "o1", "o2"):
            assert await store.load_journal(run_id) == [entry(run_id, 0)]


@pytest.mark.parametrize("guarded_first", [True, False], ids=["guarded-first", "plain-first"])
@pytest.mark.parametrize("completed", ["guarded", "plain"])
async def test_a_guarded_entry_at_a_plain_entrys_position_in_a_batch(
    postgres_url: str, guarded_first: bool, completed: str
) -> None:
    async with PostgresStore(postgres_url) as store:
        for run_id in ("lead", "r", "o"):
            await store.create_run(run(run_id))
        guarded_entry = entry("r", 3, "completed" if completed == "guarded" else "failed")
        plain_entry = entry("r", 3, "completed" if completed == "plain" else "failed")
        guarded: tuple[list[JournalEntry], RunPatch | None] = (
            [guarded_entry],
            RunPatch("r", T0 + 1, add_input_tokens=2),
        )
        plain: tuple[list[JournalEntry], RunPatch | None] = ([plain_entry], None)
        pair = [guarded, plain] if guarded_first else [plain, guarded]
        calls: list[tuple[list[JournalEntry], RunPatch | None]] = [
            ([entry("lead", 0)], None),  # leads; the rest queue behind it
            *pair,
            ([entry("o", 0)], RunPatch("o", T0 + 1, add_input_tokens=1)),
        ]
        group = batcher(store)
        before = (group.batched, group.fallbacks)
        assert await record_all(store, calls) == [True] * len(calls)
        assert group.batched - before[0] == len(calls) - 1
        assert group.fallbacks == before[1]  # no statement failed, nothing re-ran alone
        assert await store.load_journal("r") == [entry("r", 3)]  # the completed one
        stored = await store.get_run("r")
        assert stored is not None
        assert stored.input_tokens == 2
        assert await store.load_journal("o") == [entry("o", 0)]


# -- wake-ups ----------------------------------------------------------------------------


async def test_a_batched_patch_handing_over_a_deadline_notifies(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as watcher, PostgresStore(postgres_url) as writer:
        await writer.create_run(run("lead"))
        await writer.create_run(run("o"))
        for run_id in ("s0", "s1"):
            await writer.create_run(
                dataclasses.replace(run(run_id), owner="w", lease_until=T0 + 30)
            )
        token = await watcher.change_token()
        assert await watcher.change_token() == token  # listening
        deadlines = watcher.deadline_token()

        def suspend(run_id: str) -> RunPatch:
            return RunPatch(
                run_id,
                T0 + 1,
                status="waiting",
                clear_wait=True,
                wait=b'{"topic": "t"}',
                wake_at=T0 + 60,
                wait_topics="t",
                release=True,
                expect=("running",),
            )

        group = batcher(writer)
        before = (group.batched, group.fallbacks)
        calls: list[tuple[list[JournalEntry], RunPatch | None]] = [
            ([entry("lead", 0)], None),  # leads: a plain checkpoint, which notifies nobody
            ([entry("o", 0)], None),
            ([entry("s0", 0)], suspend("s0")),
            ([], suspend("s1")),
        ]
        assert await record_all(writer, calls) == [True] * len(calls)
        # The suspending patches went out in a batch, not alone (nor re-run alone).
        assert group.batched - before[0] == len(calls) - 1
        assert group.fallbacks == before[1]
        for run_id in ("s0", "s1"):
            stored = await writer.get_run(run_id)
            assert stored is not None
            assert (stored.status, stored.owner, stored.lease_until) == ("waiting", None, None)
            assert (stored.wake_at, stored.wait_topics) == (T0 + 60, "t")
        assert await writer.load_journal("s0") == [entry("s0", 0)]

        with anyio.fail_after(5):
            while await watcher.change_token() == token:
                await anyio.sleep(0.05)
        assert watcher.deadline_token() != deadlines
