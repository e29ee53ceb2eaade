"""SQLite run store: the embedded default, one file, WAL mode, many readers.

Two connections per store: a writer whose mutations all go through a
:class:`~kitaru.storage._group_commit.GroupCommitter` (concurrent checkpoints
share transactions), and a reader, which WAL lets run alongside the writer.
Semantics mirror :class:`~kitaru.storage.memory.MemoryStore` exactly; the
contract suite in ``tests/storage`` holds both to them.

URLs: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import anyio

from kitaru._errors import ConfigurationError, StorageError

from ._group_commit import GroupCommitStatistics, GroupCommitter, run_in_connection
from ._migrations.sqlite import current_version, migrate
from ._url import scheme_of
from .base import ACTIVE_STATUSES, JournalEntry, RunPatch, RunRecord

__all__ = ("SQLiteStore",)

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 5000

_RUN_COLUMNS = tuple(f.name for f in fields(RunRecord))
_ENTRY_COLUMNS = tuple(f.name for f in fields(JournalEntry))
_run_values = attrgetter(*_RUN_COLUMNS)
_entry_values = attrgetter(*_ENTRY_COLUMNS)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


_ACTIVE = f"status IN ({_marks(len(ACTIVE_STATUSES))})"
_SELECT_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
_GET_RUN = f"{_SELECT_RUN} WHERE id = ?"
_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({_marks(len(_RUN_COLUMNS))}) "
    "ON CONFLICT (id) DO NOTHING"
)
# A completed entry is final: the upsert leaves it alone, anything else is replaced.
_UPSERT_ENTRY = (
    f"INSERT INTO journal ({', '.join(_ENTRY_COLUMNS)}) VALUES ({_marks(len(_ENTRY_COLUMNS))}) "
    "ON CONFLICT (run_id, position) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ENTRY_COLUMNS[2:])
    + " WHERE journal.status != 'completed'"
)
_LOAD_JOURNAL = (
    f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM journal WHERE run_id = ? ORDER BY position"
)
_PATCH_RUN = (
    "UPDATE runs SET updated_at = ?, status = COALESCE(?, status), "
    "output = COALESCE(?, output), output_ref = COALESCE(?, output_ref), "
    "error = COALESCE(?, error), error_info = COALESCE(?, error_info), "
    "owner = CASE WHEN ? THEN NULL ELSE owner END, "
    "lease_until = CASE WHEN ? THEN NULL ELSE lease_until END "
    "WHERE id = ? AND status IN ({expect})"
)
_OWNERS = f"SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL AND {_ACTIVE} ORDER BY owner"


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


class SQLiteStore:
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
        self._state: Literal["new", "open", "closed"] = "new"
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._committer: GroupCommitter | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    def __del__(self) -> None:
        if getattr(self, "_state", None) == "open":
            warnings.warn(
                f"{self!r} was opened but never closed; use 'async with' or 'await store.aclose()'",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    async def __aenter__(self) -> SQLiteStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> SQLiteStore:
        """Connect, enable WAL and migrate the schema; returns the store itself.

        Raises:
            StorageError: the file cannot be opened or is not a kitaru database
                (nothing is written to it then).
            SchemaVersionError: a newer kitaru wrote the database.
        """
        if self._state == "open":
            return self
        if self._state == "closed":
            raise self._closed_error()
        opened: list[aiosqlite.Connection] = []
        try:
            with self._wrap("create the database folder"):
                await anyio.Path(self.path.parent).mkdir(parents=True, exist_ok=True)
            with self._wrap("open"):
                writer = await self._connect(opened)
                await run_in_connection(writer, self._prepare_writer)
                reader = await self._connect(opened)
                await run_in_connection(reader, _prepare_reader)
        except BaseException:
            with anyio.CancelScope(shield=True):
                for conn in opened:
                    with suppress(Exception):
                        await conn.close()
            raise
        self._writer, self._reader = writer, reader
        self._committer = GroupCommitter(writer)
        self._state = "open"
        return self

    async def aclose(self) -> None:
        """Wait for queued writes, then close both connections; safe to call twice."""
        was_open = self._state == "open"
        self._state = "closed"
        if not was_open:
            return
        with anyio.CancelScope(shield=True), self._wrap("close"):
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

    # -- reads (reader connection) ------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None`` if there is no such run."""
        rows = await self._read("read a run", _GET_RUN, (run_id,))
        return next((RunRecord(*row) for row in rows), None)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first."""
        sql, params = _list_runs_query(status, flow, limit)
        return [RunRecord(*row) for row in await self._read("list runs", sql, params)]

    async def load_journal(self, run_id: str) -> list[JournalEntry]:
        """The run's journal ordered by position."""
        rows = await self._read("load a journal", _LOAD_JOURNAL, (run_id,))
        return [JournalEntry(*row) for row in rows]

    async def orphans(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Ids of active runs of ``flows`` that could be claimed right now, oldest first."""
        if not flows:
            self._open_parts()
            return []
        sql = (
            f"SELECT id FROM runs WHERE flow IN ({_marks(len(flows))}) AND {_ACTIVE} "
            f"AND {_claimable_clause(len(dead_owners), own=False)} "
            "ORDER BY created_at, id LIMIT ?"
        )
        params = (*flows, *ACTIVE_STATUSES, *dead_owners, now, limit)
        return [row[0] for row in await self._read("find orphaned runs", sql, params)]

    async def owners(self) -> list[str]:
        """Distinct owners currently holding the lease of an active run."""
        rows = await self._read("list lease owners", _OWNERS, ACTIVE_STATUSES)
        return [row[0] for row in rows]

    # -- mutations (writer connection, group-committed) ---------------------------

    async def create_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists; returns (stored, created)."""
        values = _run_values(run)

        def op(conn: sqlite3.Connection) -> tuple[RunRecord, bool]:
            if conn.execute(_INSERT_RUN, values).rowcount == 1:
                return run, True
            existing = _fetch_run(conn, run.id)
            assert existing is not None  # the insert conflicted on this id
            return existing, False

        return await self._write("create a run", op)

    async def record(self, entries: Sequence[JournalEntry], patch: RunPatch | None = None) -> bool:
        """Atomically write journal entries (never over a completed one) and apply ``patch``.

        Returns ``False`` and writes nothing when the run's status is not in
        ``patch.expect``.

        Raises:
            StorageError: an entry belongs to a run that does not exist.
        """
        rows = [_entry_values(entry) for entry in entries]
        run_ids = list(dict.fromkeys(entry.run_id for entry in entries))

        def op(conn: sqlite3.Connection) -> bool:
            if patch is not None:
                found = conn.execute("SELECT status FROM runs WHERE id = ?", (patch.run_id,))
                row = found.fetchone()
                if row is None or row[0] not in patch.expect:
                    return False
            for run_id in run_ids:
                if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                    raise StorageError(f"cannot record a journal entry for unknown run {run_id}")
            conn.executemany(_UPSERT_ENTRY, rows)
            if patch is not None:
                _patch_run(conn, patch)
            return True

        return await self._write("record journal entries", op)

    async def update_run(self, patch: RunPatch) -> RunRecord | None:
        """Apply ``patch`` if the run's status is in ``patch.expect``; else ``None``."""

        def op(conn: sqlite3.Connection) -> RunRecord | None:
            return _fetch_run(conn, patch.run_id) if _patch_run(conn, patch) else None

        return await self._write("update a run", op)

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
        sql = (
            f"UPDATE runs SET owner = ?, lease_until = ? WHERE id = ? AND {_ACTIVE} "
            f"AND {_claimable_clause(len(dead_owners), own=True)}"
        )
        params = (owner, lease_until, run_id, *ACTIVE_STATUSES, owner, *dead_owners, now)

        def op(conn: sqlite3.Connection) -> RunRecord | None:
            return _fetch_run(conn, run_id) if conn.execute(sql, params).rowcount else None

        return await self._write("claim a run", op)

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        """Extend every lease ``owner`` holds; returns how many."""

        def op(conn: sqlite3.Connection) -> int:
            sql = "UPDATE runs SET lease_until = ? WHERE owner = ?"
            return conn.execute(sql, (lease_until, owner)).rowcount

        return await self._write("renew leases", op)

    async def release(self, owner: str, run_ids: Sequence[str] | None = None) -> None:
        """Give up ``owner``'s leases (all of them when ``run_ids`` is ``None``)."""
        ids = None if run_ids is None else [(owner, run_id) for run_id in run_ids]

        def op(conn: sqlite3.Connection) -> None:
            sql = "UPDATE runs SET owner = NULL, lease_until = NULL WHERE owner = ?"
            if ids is None:
                conn.execute(sql, (owner,))
            else:
                conn.executemany(f"{sql} AND id = ?", ids)

        await self._write("release leases", op)

    # -- plumbing -----------------------------------------------------------------

    async def _connect(self, opened: list[aiosqlite.Connection]) -> aiosqlite.Connection:
        # isolation_level=None: the group committer issues BEGIN/COMMIT itself.
        conn = await aiosqlite.connect(
            self.path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        opened.append(conn)
        return conn

    def _prepare_writer(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS:d}")
        # Read-only probe first: a foreign, corrupt or too-new file fails here,
        # before journal_mode (which writes the header) touches it.
        current_version(conn, str(self.path))
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, str(self.path))

    def _open_parts(self) -> tuple[GroupCommitter, aiosqlite.Connection]:
        if self._state != "open" or self._committer is None or self._reader is None:
            if self._state == "closed":
                raise self._closed_error()
            raise StorageError(
                f"SQLite store {self.path} is not open; use 'async with SQLiteStore(url)', "
                "'await store.open()' or kitaru.storage.open_store(url)"
            )
        return self._committer, self._reader

    async def _read(self, action: str, sql: str, params: Sequence[Any]) -> Iterable[sqlite3.Row]:
        reader = self._open_parts()[1]
        with self._wrap(action):
            return await reader.execute_fetchall(sql, params)

    async def _write(self, action: str, op: Callable[[sqlite3.Connection], T]) -> T:
        committer = self._open_parts()[0]
        with self._wrap(action):
            return await committer.submit(op)

    def _closed_error(self) -> StorageError:
        return StorageError(
            f"SQLite store {self.path} is closed; open a new one with "
            "kitaru.storage.open_store(url)"
        )

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


def _list_runs_query(
    status: str | None, flow: str | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """SQL for :meth:`SQLiteStore.list_runs`; every filter combination uses an index."""
    where: list[str] = []
    params: list[Any] = []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if flow is not None:
        where.append("flow = ?")
        params.append(flow)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"{_SELECT_RUN}{clause} ORDER BY created_at DESC, id DESC LIMIT ?"
    return sql, (*params, limit)


def _claimable_clause(dead: int, *, own: bool) -> str:
    # Mirrors memory._claimable: free, already ours, held by a dead owner, or expired.
    # A NULL lease_until makes the comparison NULL, i.e. not expired.
    terms = ["owner IS NULL"]
    if own:
        terms.append("owner = ?")
    if dead:
        terms.append(f"owner IN ({_marks(dead)})")
    terms.append("lease_until < ?")
    return f"({' OR '.join(terms)})"


# Everything below runs on a connection's worker thread.


def _prepare_reader(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS:d}")
    conn.execute("PRAGMA query_only = ON")  # every write belongs to the group committer


def _fetch_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(_GET_RUN, (run_id,)).fetchone()
    return None if row is None else RunRecord(*row)


def _patch_run(conn: sqlite3.Connection, patch: RunPatch) -> bool:
    sql = _PATCH_RUN.format(expect=_marks(len(patch.expect)))
    params = (
        patch.updated_at,
        patch.status,
        patch.output,
        patch.output_ref,
        patch.error,
        patch.error_info,
        patch.release,
        patch.release,
        patch.run_id,
        *patch.expect,
    )
    return conn.execute(sql, params).rowcount > 0
