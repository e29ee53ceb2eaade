"""SQLite specifics: schema migrations, broken files, group commit, URLs, resources."""

from __future__ import annotations

import dataclasses
import gc
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiosqlite
import anyio
import pytest

from kitaru import ConfigurationError, SchemaVersionError, StorageError
from kitaru.storage import JournalEntry, Message, RunPatch, RunRecord
from kitaru.storage._migrations.sqlite import APPLICATION_ID, MIGRATIONS
from kitaru.storage.sqlite import SQLiteStore
from kitaru.storage.sqlite._group_commit import GroupCommitter
from kitaru.storage.sqlite._ops import PATCH_FIELDS, list_runs_query
from tests.storage._records import T0, make_entry, make_run

pytestmark = pytest.mark.anyio


def read(path: Path) -> bytes:
    return path.read_bytes()


def exists(path: Path) -> bool:
    return path.exists()


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as conn:
        value: object = conn.execute(f"PRAGMA {name}").fetchone()[0]
    conn.close()
    return value


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kitaru.db"


@pytest.fixture
async def sqlite_store(db: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(url_of(db)) as store:
        yield store


# -- schema -------------------------------------------------------------------------


async def test_open_migrates_and_records_the_version(db: Path) -> None:
    async with SQLiteStore(url_of(db)) as store:
        await store.create_run(make_run("r1"))
    assert pragma(db, "user_version") == len(MIGRATIONS)
    assert pragma(db, "application_id") == APPLICATION_ID
    assert pragma(db, "journal_mode") == "wal"
    with sqlite3.connect(db) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"runs", "journal", "runs_status_flow", "runs_created", "runs_owner"} <= names
    assert "runs_wake" in names


async def test_schema_has_a_column_per_record_field(db: Path) -> None:
    async with SQLiteStore(url_of(db)):
        pass
    with sqlite3.connect(db) as conn:

        def columns(table: str) -> set[str]:
            return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}

        assert columns("runs") == {f.name for f in dataclasses.fields(RunRecord)}
        assert columns("journal") == {f.name for f in dataclasses.fields(JournalEntry)}
        assert columns("messages") == {f.name for f in dataclasses.fields(Message)} | {"consumed"}
    conn.close()
    assert {f.name for f in dataclasses.fields(RunPatch)} == PATCH_FIELDS


async def test_reopening_keeps_data_and_migrates_nothing(db: Path) -> None:
    async with SQLiteStore(url_of(db)) as store:
        await store.create_run(make_run("r1"))
        await store.record([make_entry("r1", 0)])
    async with SQLiteStore(url_of(db)) as store:
        assert await store.get_run("r1") == make_run("r1")
        assert await store.load_journal("r1") == [make_entry("r1", 0)]
    assert pragma(db, "user_version") == len(MIGRATIONS)


async def test_two_stores_opening_one_new_file_at_once(db: Path) -> None:
    stores = [SQLiteStore(url_of(db)) for _ in range(8)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        await stores[0].create_run(make_run("r1"))
        assert await stores[7].get_run("r1") == make_run("r1")
    finally:
        for store in stores:
            await store.aclose()
    assert pragma(db, "user_version") == len(MIGRATIONS)


async def test_database_newer_than_the_code_is_refused_untouched(db: Path) -> None:
    async with SQLiteStore(url_of(db)) as store:
        await store.create_run(make_run("r1"))
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    before = read(db)
    store = SQLiteStore(url_of(db))
    with pytest.raises(SchemaVersionError) as caught:
        await store.open()
    message = str(caught.value)
    assert f"version {newer}" in message
    assert f"up to {len(MIGRATIONS)}" in message
    assert "Upgrade kitaru" in message
    assert "another database" in message
    assert read(db) == before
    await store.aclose()


async def test_corrupt_file_is_refused_untouched(db: Path) -> None:
    garbage = b"this is not a database, just some bytes\n" * 200
    await anyio.Path(db).write_bytes(garbage)
    store = SQLiteStore(url_of(db))
    with pytest.raises(StorageError, match=r"not a kitaru SQLite database \(or is corrupt\)") as e:
        await store.open()
    assert "KITARU_STORE" in str(e.value)
    assert str(db) in str(e.value)
    assert isinstance(e.value.__cause__, sqlite3.DatabaseError)
    assert read(db) == garbage
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]
    await store.aclose()


async def test_another_applications_database_is_refused_untouched(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.close()
    before = read(db)
    with pytest.raises(StorageError, match="not a kitaru SQLite database"):
        await SQLiteStore(url_of(db)).open()
    assert read(db) == before


# -- group commit -------------------------------------------------------------------


async def test_concurrent_records_share_transactions(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_run(make_run("r1"))
    before = sqlite_store.statistics()

    async def write(position: int) -> None:
        assert await sqlite_store.record([make_entry("r1", position)])

    async with anyio.create_task_group() as tg:
        for position in range(200):
            tg.start_soon(write, position)
    stats = sqlite_store.statistics()
    ops, batches = stats.ops - before.ops, stats.batches - before.batches
    assert ops == 200
    assert batches <= 20, stats
    assert [e.position for e in await sqlite_store.load_journal("r1")] == list(range(200))


async def test_failing_op_fails_only_its_caller(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_run(make_run("r1"))
    outcomes: dict[int, BaseException | None] = {}

    async def write(position: int) -> None:
        run_id = "missing" if position == 50 else "r1"
        try:
            await sqlite_store.record([make_entry(run_id, position)])
        except StorageError as exc:
            outcomes[position] = exc
        else:
            outcomes[position] = None

    async with anyio.create_task_group() as tg:
        for position in range(100):
            tg.start_soon(write, position)
    assert isinstance(outcomes.pop(50), StorageError)
    assert set(outcomes.values()) == {None}
    journal = await sqlite_store.load_journal("r1")
    assert [e.position for e in journal] == [p for p in range(100) if p != 50]
    assert sqlite_store.statistics().fallbacks == 1


async def test_refused_ops_in_a_batch_write_nothing(sqlite_store: SQLiteStore) -> None:
    # A guarded op that refuses returns False inside the batch's transaction
    # (it is not rolled back on its own), so it must refuse before writing.
    for run_id in ("ok", "done"):
        await sqlite_store.create_run(make_run(run_id))
    await sqlite_store.update_run(RunPatch("done", T0 + 1, status="completed"))
    message, _ = await sqlite_store.post(Message(0, "done", "t", b"1", T0))
    waiting = RunPatch("done", T0 + 2, status="running", add_input_tokens=5, expect=("waiting",))
    results: dict[str, bool] = {}

    async def call(name: str, op: Callable[[], Awaitable[bool]]) -> None:
        results[name] = await op()

    async with anyio.create_task_group() as tg:
        for position in range(20):
            tg.start_soon(
                call, f"ok{position}", lambda p=position: sqlite_store.record([make_entry("ok", p)])
            )
        tg.start_soon(call, "record", lambda: sqlite_store.record([make_entry("done", 0)], waiting))
        tg.start_soon(
            call,
            "consume",
            lambda: sqlite_store.consume(message.id, make_entry("done", 1), waiting),
        )
        tg.start_soon(call, "reset", lambda: sqlite_store.reset_journal(waiting))
    assert (results.pop("record"), results.pop("consume"), results.pop("reset")) == (False,) * 3
    assert all(results.values())
    assert await sqlite_store.load_journal("done") == []
    done = await sqlite_store.get_run("done")
    assert done is not None and (done.status, done.input_tokens) == ("completed", 0)
    assert await sqlite_store.next_message("done", "t") == message
    assert len(await sqlite_store.load_journal("ok")) == 20


@pytest.fixture
async def committer(db: Path) -> AsyncIterator[tuple[GroupCommitter, aiosqlite.Connection]]:
    conn = await aiosqlite.connect(db, isolation_level=None)
    try:
        await conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        group = GroupCommitter(conn)
        yield group, conn
        await group.aclose()
    finally:
        await conn.close()


async def rows(conn: aiosqlite.Connection) -> list[int]:
    return [row[0] for row in await conn.execute_fetchall("SELECT x FROM t ORDER BY x")]


def insert(value: int, delay: float = 0.0) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        time.sleep(delay)  # runs on the connection's thread, not the event loop
        return conn.execute("INSERT INTO t VALUES (?)", (value,)).rowcount

    return op


async def test_cancelled_leader_still_commits_every_batch(
    committer: tuple[GroupCommitter, aiosqlite.Connection],
) -> None:
    group, conn = committer
    results: list[int] = []
    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await group.submit(insert(1, delay=0.2))

    async def follower() -> None:
        results.append(await group.submit(insert(2)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.sleep(0.05)  # the leader's batch is in flight now
        tg.start_soon(follower)  # queues for the next batch, which the leader runs
        await anyio.sleep(0.05)
        leader_scope.cancel()
    assert await rows(conn) == [1, 2]
    assert results == [1]
    assert group.statistics().batches == 2


async def test_follower_cancelled_before_its_batch_is_dropped(
    committer: tuple[GroupCommitter, aiosqlite.Connection],
) -> None:
    group, conn = committer
    async with anyio.create_task_group() as tg:
        tg.start_soon(group.submit, insert(1, delay=0.2))
        await anyio.sleep(0.05)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await group.submit(insert(2))
        tg.start_soon(group.submit, insert(3))
    assert await rows(conn) == [1, 3]
    assert group.statistics().ops == 2


async def test_failed_batch_is_rolled_back_and_retried_per_op(
    committer: tuple[GroupCommitter, aiosqlite.Connection],
) -> None:
    group, conn = committer
    errors: list[Exception] = []

    async def submit(value: int) -> None:
        try:
            await group.submit(insert(value))
        except sqlite3.IntegrityError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(group.submit, insert(0, delay=0.1))
        await anyio.sleep(0.02)
        for value in (1, 2, 1, 3):  # the second 1 violates the primary key
            tg.start_soon(submit, value)
    assert await rows(conn) == [0, 1, 2, 3]
    assert len(errors) == 1
    stats = group.statistics()
    assert (stats.batches, stats.ops, stats.fallbacks) == (2, 5, 1)


async def test_locked_database_fails_the_batch_once(db: Path) -> None:
    conn = await aiosqlite.connect(db, isolation_level=None, timeout=0.1)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        await conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        group = GroupCommitter(conn)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        errors: list[Exception] = []

        async def submit(value: int) -> None:
            try:
                await group.submit(insert(value))
            except sqlite3.OperationalError as exc:
                errors.append(exc)

        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            for value in range(5):
                tg.start_soon(submit, value)
        # One wait on the lock per batch, not one per op.
        assert time.monotonic() - start < 1.0
        assert len(errors) == 5
        assert group.statistics().fallbacks == 0
        blocker.execute("ROLLBACK")
        await group.submit(insert(9))
        assert await rows(conn) == [9]
        await group.aclose()
    finally:
        blocker.close()
        await conn.close()


async def test_closed_committer_refuses_new_ops(
    committer: tuple[GroupCommitter, aiosqlite.Connection],
) -> None:
    group, _ = committer
    await group.aclose()
    with pytest.raises(StorageError, match="closed"):
        await group.submit(insert(1))


# -- URLs and lifecycle -------------------------------------------------------------


def test_url_forms() -> None:
    assert SQLiteStore("sqlite:///data/kitaru.db").path == Path("data/kitaru.db")
    assert SQLiteStore("sqlite:////srv/data/kitaru.db").path == Path("/srv/data/kitaru.db")
    assert SQLiteStore("sqlite+aiosqlite:///k.db").path == Path("k.db")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/kitaru.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///kitaru.db?mode=ro",
        "postgresql:///kitaru.db",
        "kitaru.db",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore(url)


async def test_relative_path_creates_its_folder(tmp_path: Path) -> None:
    # tests/conftest.py runs every test inside its own tmp_path.
    store = SQLiteStore("sqlite:///nested/dir/kitaru.db")
    assert not (tmp_path / "nested").exists()  # the constructor does no I/O
    async with store:
        await store.create_run(make_run("r1"))
    assert (tmp_path / "nested" / "dir" / "kitaru.db").is_file()


async def test_store_must_be_opened_first(db: Path) -> None:
    store = SQLiteStore(url_of(db))
    with pytest.raises(StorageError, match="not open"):
        await store.get_run("r1")
    with pytest.raises(StorageError, match="not open"):
        await store.create_run(make_run("r1"))
    assert not exists(db)


async def test_closed_store_cannot_reopen(db: Path) -> None:
    store = SQLiteStore(url_of(db))
    await store.open()
    assert await store.open() is store
    await store.aclose()
    with pytest.raises(StorageError, match="closed"):
        await store.open()


async def test_unclosed_store_warns_and_its_threads_end(db: Path) -> None:
    threads: list[threading.Thread] = []

    async def open_and_drop() -> None:
        store = SQLiteStore(url_of(db))
        await store.open()
        threads.extend(conn._thread for conn in (store._writer, store._reader) if conn)

    with pytest.warns(ResourceWarning, match="never closed"):
        await open_and_drop()
    # Nothing may keep a dropped store's connections alive: aiosqlite's own
    # finaliser must get to stop their (non-daemon) worker threads.
    with anyio.fail_after(5):
        while any(thread.is_alive() for thread in threads):
            await anyio.sleep(0.01)
    assert len(threads) == 2


async def test_closed_store_is_collectable(db: Path) -> None:
    store = SQLiteStore(url_of(db))
    async with store:
        await store.create_run(make_run("r1"))
        await store.get_run("r1")
    ref = weakref.ref(store)
    del store
    gc.collect()
    assert ref() is None


async def test_driver_errors_are_wrapped(db: Path) -> None:
    async with SQLiteStore(url_of(db)) as store:
        bad = dataclasses.replace(make_run("r1"), flow=None)  # type: ignore[arg-type]
        with pytest.raises(StorageError, match=re.escape(str(db))) as caught:
            await store.create_run(bad)
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)


@pytest.mark.parametrize(
    ("status", "flow"), [(None, None), ("running", None), (None, "f"), ("running", "f")]
)
async def test_list_runs_uses_an_index(
    sqlite_store: SQLiteStore, db: Path, status: str | None, flow: str | None
) -> None:
    sql, params = list_runs_query(status, flow, 10)
    with sqlite3.connect(db) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    conn.close()
    assert all("USING" in step for step in plan if step.startswith(("SCAN", "SEARCH"))), plan
