"""SQLite run store: the embedded default, one file, WAL mode, many readers.

Two connections per store: a writer whose mutations all go through a
:class:`~kitaru.storage.sqlite._group_commit.GroupCommitter` (concurrent checkpoints
share transactions), and a reader, which WAL lets run alongside the writer.
Semantics mirror :class:`~kitaru.storage.memory.MemoryStore` exactly; the
contract suite in ``tests/storage`` holds both to them.

URLs: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self, TypeVar

import aiosqlite
import anyio

from kitaru._errors import ConfigurationError, StorageError

from .._migrations.sqlite import current_version, migrate
from .._resource import StoreResource
from .._url import scheme_of
from ..base import JournalEntry, Message, RunPatch, RunRecord, Unhosted
from . import _ops as ops
from ._group_commit import GroupCommitStatistics, GroupCommitter, run_in_connection

__all__ = ("SQLiteStore",)

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 5000


def _sqlite_path(url: str) -> Path:
    """The file a ``sqlite://`` URL names (relative to the working directory if relative)."""
    forms = "use 'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db'"
    if scheme_of(url).partition("+")[0] != "sqlite":
        raise ConfigurationError(f"{url!r} is not a sqlite:// URL; {forms}")
    rest = url.partition("://")[2]
    if not rest.startswith("/"):
        raise ConfigurationError(f"{url!r} names a host, which SQLite has none of; {forms}")
    path = rest[1:]
    if not path or path.endswith("/"):
        raise ConfigurationError(f"{url!r} names no database file; {forms}")
    if path == ":memory:":
        raise ConfigurationError(
            f"{url!r}: an in-memory SQLite database cannot be shared by the store's two "
            "connections; use 'memory://' for a store that lives in this process"
        )
    if "?" in path or "#" in path:
        raise ConfigurationError(f"{url!r}: sqlite:// URLs take no query options; {forms}")
    return Path(path)


class SQLiteStore(StoreResource):
    """Run store in one SQLite file, shared safely by several processes.

    The constructor does no I/O; ``await store.open()`` (or ``async with``)
    connects, switches the file to WAL mode and applies schema migrations.

    Args:
        url: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``;
            the parent folder is created when the store opens.

    Raises:
        ConfigurationError: ``url`` is not a usable ``sqlite://`` URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        #: The database file.
        self.path = _sqlite_path(url)
        self._where = f"SQLite store {self.path}"
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._committer: GroupCommitter | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    async def open(self) -> Self:
        """Connect, enable WAL and migrate the schema; returns the store itself.

        Raises:
            StorageError: the file cannot be opened or is not a kitaru database
                (nothing is written to it then), or the store was closed.
            SchemaVersionError: a newer kitaru wrote the database.
        """
        return await super().open()

    async def _setup(self) -> None:
        opened: list[aiosqlite.Connection] = []
        try:
            with self._wrap("create the database folder"):
                await anyio.Path(self.path.parent).mkdir(parents=True, exist_ok=True)
            with self._wrap("open"):
                writer = await self._connect(opened)
                # A plain function, not a bound method: aiosqlite's worker thread keeps
                # its last callable alive, and a reference to self would keep an
                # unclosed store from ever being collected (and warned about).
                where = str(self.path)
                await run_in_connection(writer, lambda conn: _prepare_writer(conn, where))
                reader = await self._connect(opened)
                await run_in_connection(reader, _prepare_reader)
        except BaseException:
            with anyio.CancelScope(shield=True):
                for conn in opened:
                    with suppress(Exception):
                        await conn.close()
            raise
        self._writer, self._reader = writer, reader
        self._committer = GroupCommitter(
            writer,
            inline=True,
            checkpoint=lambda: run_in_connection(reader, _wal_checkpoint),
            busy_timeout_ms=_BUSY_TIMEOUT_MS,
        )

    async def _teardown(self) -> None:
        # Queued writes first, then both connections.
        with self._wrap("close"):
            try:
                if self._committer is not None:
                    await self._committer.aclose()
            finally:
                try:
                    if self._reader is not None:
                        await self._reader.close()
                finally:
                    if self._writer is not None:
                        await self._writer.close()

    def statistics(self) -> GroupCommitStatistics:
        """Group-commit counters of this store's writer (zeros before it opens)."""
        if self._committer is None:
            return GroupCommitStatistics(0, 0, 0)
        return self._committer.statistics()

    # -- reads: the reader connection -------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None`` if there is no such run."""
        return await self._read("read a run", lambda c: ops.get_run(c, run_id))

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first (older than run ``before``)."""
        return await self._read(
            "list runs", lambda c: ops.list_runs(c, status, flow, limit, before)
        )

    async def journal_counts(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Journal sizes of ``run_ids`` (runs without entries are absent)."""
        ids = list(run_ids)
        return await self._read("count journal entries", lambda c: ops.journal_counts(c, ids))

    async def find_runs(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids of runs starting with ``prefix``, in id order."""
        return await self._read("find runs", lambda c: ops.find_runs(c, prefix, limit))

    async def tree_usage(self, run_id: str) -> tuple[int, float | None]:
        """Tokens and cost of the run and every run below it (child flows)."""
        return await self._read("sum a run's usage", lambda c: ops.tree_usage(c, run_id))

    async def load_journal(self, run_id: str) -> list[JournalEntry]:
        """The run's journal ordered by position."""
        return await self._read("load a journal", lambda c: ops.load_journal(c, run_id))

    async def orphans(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Ids of ``running`` runs of ``flows`` that could be claimed now, oldest first."""
        return await self._unhosted("orphans", flows, now, dead_owners, limit)

    async def due(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Suspended runs of ``flows`` nobody live hosts whose ``wake_at`` has passed."""
        return await self._unhosted("due", flows, now, dead_owners, limit)

    async def _unhosted(
        self,
        kind: Unhosted,
        flows: Sequence[str],
        now: float,
        dead_owners: Sequence[str],
        limit: int,
    ) -> list[str]:
        flows, dead = tuple(flows), tuple(dead_owners)
        action = "find due runs" if kind == "due" else "find orphaned runs"
        return await self._read(action, lambda c: ops.unhosted(c, kind, flows, now, dead, limit))

    async def next_wake(self, flows: Sequence[str], *, now: float) -> float | None:
        """The earliest ``wake_at`` among suspended runs of ``flows`` nobody hosts."""
        flows = tuple(flows)
        return await self._read("find the next deadline", lambda c: ops.next_wake(c, flows, now))

    async def owners(self) -> list[str]:
        """Distinct owners currently holding the lease of an active run."""
        return await self._read("list lease owners", ops.owners)

    async def next_message(self, run_id: str, topic: str) -> Message | None:
        """The oldest unconsumed message of ``run_id`` on ``topic``."""
        return await self._read("read a message", lambda c: ops.next_message(c, run_id, topic))

    async def message_with_key(self, run_id: str, key: str) -> Message | None:
        """The message ``run_id`` accepted with idempotency ``key``, consumed or not."""
        return await self._read("read a message", lambda c: ops.message_with_key(c, run_id, key))

    async def messages_after(self, after_id: int, limit: int = 1000) -> list[Message]:
        """Unconsumed messages with an id above ``after_id``, oldest first."""
        return await self._read("list messages", lambda c: ops.messages_after(c, after_id, limit))

    async def change_token(self) -> int:
        """A number that changes whenever any connection, in any process, committed."""
        return await self._read("check for changes", ops.change_token)

    # -- mutations: the writer connection, group-committed ----------------------------

    async def create_run(
        self, run: RunRecord, journal: Sequence[JournalEntry] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` and ``journal`` unless a run with its id exists; (stored, created)."""
        journal = tuple(journal)
        return await self._write("create a run", lambda c: ops.create_run(c, run, journal))

    async def record(self, entries: Sequence[JournalEntry], patch: RunPatch | None = None) -> bool:
        """Atomically write journal entries (never over a completed one) and apply ``patch``.

        Returns ``False`` and writes nothing when the run's status is not in
        ``patch.expect``.

        Raises:
            StorageError: an entry belongs to a run that does not exist.
        """
        entries = tuple(entries)
        return await self._write("record journal entries", lambda c: ops.record(c, entries, patch))

    async def update_run(self, patch: RunPatch) -> RunRecord | None:
        """Apply ``patch`` if the run's status is in ``patch.expect``; else ``None``."""
        return await self._write("update a run", lambda c: ops.update_run(c, patch))

    async def claim(
        self,
        run_id: str,
        owner: str,
        *,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str] = (),
    ) -> RunRecord | None:
        """Take the lease of an active run that nobody live holds; else ``None``."""
        dead = tuple(dead_owners)
        return await self._write(
            "claim a run", lambda c: ops.claim(c, run_id, owner, now, lease_until, dead)
        )

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        """Extend every lease ``owner`` holds; returns how many."""
        return await self._write("renew leases", lambda c: ops.renew_leases(c, owner, lease_until))

    async def release(self, owner: str, run_ids: Sequence[str] | None = None) -> None:
        """Give up ``owner``'s leases (all of them when ``run_ids`` is ``None``)."""
        ids = None if run_ids is None else tuple(run_ids)
        await self._write("release leases", lambda c: ops.release(c, owner, ids))

    async def post(self, message: Message) -> tuple[Message, bool]:
        """Put ``message`` in its run's mailbox, unless its key was seen for the run.

        Returns the stored message (with its id) and whether this call stored it.
        """
        return await self._write("post a message", lambda c: ops.post(c, message))

    async def consume(
        self, message_id: int, entry: JournalEntry | None, patch: RunPatch | None
    ) -> bool:
        """Atomically mark a message consumed, record ``entry`` and apply ``patch``.

        Returns ``False`` (writing nothing) if the message was consumed already
        or the patch's status expectation does not hold.
        """
        return await self._write(
            "consume a message", lambda c: ops.consume(c, message_id, entry, patch)
        )

    async def reset_journal(self, patch: RunPatch) -> bool:
        """Delete the run's journal and apply ``patch``, if the run's status matches."""
        return await self._write("reset a journal", lambda c: ops.reset_journal(c, patch))

    # -- plumbing -------------------------------------------------------------------

    def _abandon(self) -> None:
        # aiosqlite's worker threads keep their connections alive (so their
        # own __del__ never runs) and would keep the interpreter from exiting.
        for conn in (self._writer, self._reader):
            if conn is not None:
                with suppress(Exception):
                    conn.stop()

    async def _connect(self, opened: list[aiosqlite.Connection]) -> aiosqlite.Connection:
        # isolation_level=None: the group committer issues BEGIN/COMMIT itself.
        # check_same_thread=False: the group committer commits small batches
        # inline on the event loop (never while the worker thread uses it).
        conn = await aiosqlite.connect(
            self.path,
            isolation_level=None,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
        )
        opened.append(conn)
        return conn

    def _open_parts(self) -> tuple[GroupCommitter, aiosqlite.Connection]:
        self._check_open()
        assert self._committer is not None
        assert self._reader is not None
        return self._committer, self._reader

    async def _read(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        # One hop per read, and rows become records on the worker thread, not the loop.
        reader = self._open_parts()[1]
        with self._wrap(action):
            return await run_in_connection(reader, fn)

    async def _write(self, action: str, op: Callable[[sqlite3.Connection], T]) -> T:
        committer = self._open_parts()[0]
        with self._wrap(action):
            return await committer.submit(op)

    @contextmanager
    def _wrap(self, action: str) -> Iterator[None]:
        """Turn driver errors into StorageError naming the file and a way out."""
        try:
            yield
        except (sqlite3.Error, OSError, ValueError, OverflowError) as exc:
            # aiosqlite raises ValueError once its connection is gone.
            raise StorageError(_explain(self.path, action, exc)) from exc


def _explain(path: Path, action: str, exc: BaseException) -> str:
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or code.startswith("SQLITE_CORRUPT_"):
        return (
            f"{path} is not a kitaru SQLite database (or is corrupt): {exc}; "
            "move it aside or point KITARU_STORE elsewhere"
        )
    head = f"SQLite store {path}: could not {action}: {exc}"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"{head}. Another process held the write lock for more than "
            f"{_BUSY_TIMEOUT_MS // 1000} s; check for stuck processes using this file, then retry"
        )
    if code == "SQLITE_FULL":
        return f"{head}. The disk is full; free some space, then retry"
    if code.startswith("SQLITE_CONSTRAINT"):
        return f"{head}. A value does not fit the schema; check the record passed to {action}"
    if isinstance(exc, OSError) or code.startswith(
        ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_AUTH")
    ):
        return (
            f"{head}. Check that the file and its folder exist, are writable by this user "
            "and sit on a local disk (WAL needs shared memory)"
        )
    return f"{head}. If it persists, move the database aside or point KITARU_STORE elsewhere"


# Everything below runs on a connection's worker thread.


def _prepare_writer(conn: sqlite3.Connection, where: str) -> None:
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS:d}")
    # Read-only probe first: a foreign, corrupt or too-new file fails here,
    # before journal_mode (which writes the header) touches it.
    current_version(conn, where)
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    migrate(conn, where)
    # From here on the writer may commit on the event loop, so it must never
    # wait: the group committer waits for the lock itself, off the loop. WAL
    # checkpoints (the fsync) run on the reader's thread instead of in COMMIT.
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA wal_autocheckpoint = 0")


def _wal_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _enable_wal(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return  # persistent in the file: the usual case, and it needs no lock
    # Switching needs an exclusive lock and SQLite does not apply busy_timeout
    # to it, so when several processes open a new file at once, retry here
    # (on the connection's thread, never the event loop).
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorname.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _prepare_reader(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS:d}")
    conn.execute("PRAGMA query_only = ON")  # every write belongs to the group committer
