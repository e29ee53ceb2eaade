"""Group commit: many concurrent writers, one SQLite transaction per batch.

A durable write costs one transaction (and, in WAL mode, one fsync at the next
checkpoint). When hundreds of flows finish a checkpoint at the same moment,
committing each on its own serialises them behind the single writer; here the
first caller becomes the *leader* and commits everything queued so far in one
transaction and one hop into the connection's thread. Callers that arrive
while a batch is in flight queue for the next one, which the same leader runs.

Ops are plain functions of a :class:`sqlite3.Connection`; they run in order,
without their own ``BEGIN``/``COMMIT``. If a batch fails it is rolled back and
each op is re-run in its own transaction, so one bad op fails only its caller.
An op must therefore be safe to run twice: only the run that commits counts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import aiosqlite
import anyio

from kitaru._errors import StorageError

__all__ = ("GroupCommitStatistics", "GroupCommitter", "run_in_connection")

T = TypeVar("T")


def run_in_connection(
    conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]
) -> Awaitable[T]:
    """Run ``fn(sqlite3_connection)`` on ``conn``'s worker thread in one hop.

    aiosqlite's public API makes one thread hop per statement; its private
    ``Connection._execute(fn)`` is the only way to run several statements plus
    ``COMMIT`` in a single hop (and to build records from rows off the event
    loop), so every use of that private method goes through this helper.
    """
    execute = cast("Callable[[Callable[[], T]], Awaitable[T]]", conn._execute)
    return execute(lambda: fn(conn._conn))


@dataclass(frozen=True, slots=True)
class GroupCommitStatistics:
    """Counters of a :class:`GroupCommitter` since it was created.

    Attributes:
        batches: transactions started by leaders, one per batch.
        ops: ops executed (each counted once, even if its batch fell back).
        fallbacks: batches that failed and were re-run one op per transaction.
    """

    batches: int
    ops: int
    fallbacks: int


class _Op(Generic[T]):
    __slots__ = ("error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.result)


class _Batch:
    __slots__ = ("done", "ops")

    def __init__(self) -> None:
        self.ops: list[_Op[Any]] = []
        # One event per batch wakes every follower at once.
        self.done = anyio.Event()


class GroupCommitter:
    """Batches mutations from concurrent callers into shared transactions.

    Args:
        conn: an open aiosqlite connection made with ``isolation_level=None``
            (so this class owns ``BEGIN``/``COMMIT``). Nothing else may write
            through it.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._pending: _Batch | None = None
        self._leading = False
        self._idle: anyio.Event | None = None
        self._closed = False
        self._batches = 0
        self._ops = 0
        self._fallbacks = 0

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` inside a committed transaction and return its result.

        Raises whatever ``op`` raised (its effects are rolled back), or the
        error that stopped the commit. A caller cancelled before its batch
        starts is dropped from it; once the batch runs, it commits regardless.
        """
        if self._closed:
            raise StorageError("the store's writer is closed; open a new store")
        item = _Op(op)
        batch = self._pending
        if batch is None:
            batch = self._pending = _Batch()
        batch.ops.append(item)
        if not self._leading:
            await self._lead()
            return item.outcome()
        try:
            await batch.done.wait()
        except anyio.get_cancelled_exc_class():
            if self._pending is batch:  # not started yet: it must not commit
                batch.ops.remove(item)
            raise
        return item.outcome()

    def statistics(self) -> GroupCommitStatistics:
        """Return how many batches and ops ran so far."""
        return GroupCommitStatistics(self._batches, self._ops, self._fallbacks)

    async def aclose(self) -> None:
        """Refuse new ops and wait for the batches already queued to commit."""
        self._closed = True
        if self._idle is not None:
            await self._idle.wait()

    async def _lead(self) -> None:
        self._leading = True
        idle = self._idle = anyio.Event()
        batch: _Batch | None = None
        try:
            # Shielded: cancelling the leader must not abort other callers' commits.
            with anyio.CancelScope(shield=True):
                while (batch := self._pending) is not None:
                    self._pending = None
                    if batch.ops:
                        await self._run(batch.ops)
                    batch.done.set()
        finally:
            self._leading = False
            self._idle = None
            idle.set()
            # Only reached with a batch unfinished if something outside Exception
            # (KeyboardInterrupt) escaped; never leave a follower waiting forever.
            for stranded in (batch, self._pending):
                if stranded is not None and not stranded.done.is_set():
                    _fail(stranded.ops, StorageError("group commit was interrupted"))
                    stranded.done.set()
            self._pending = None

    async def _run(self, ops: Sequence[_Op[Any]]) -> None:
        self._batches += 1
        self._ops += len(ops)
        try:
            fell_back = await run_in_connection(self._conn, lambda c: _commit_batch(c, ops))
        except Exception as exc:  # the hop itself failed, e.g. the connection is gone
            _fail(ops, exc)
            return
        if fell_back:
            self._fallbacks += 1


def _fail(ops: Sequence[_Op[Any]], exc: BaseException) -> None:
    for op in ops:
        op.error = exc


# Everything below runs on the connection's worker thread.


def _commit_batch(conn: sqlite3.Connection, ops: Sequence[_Op[Any]]) -> bool:
    """Commit all ops in one transaction; if one raises, one transaction each.

    Returns whether the batch fell back to one transaction per op. A failing
    ``BEGIN`` or ``COMMIT`` is nobody's op in particular: it propagates, and
    every op of the batch fails with it (re-running would only wait on the
    same lock again, once per op).
    """
    _begin(conn)
    try:
        results = [op.fn(conn) for op in ops]
    except Exception as exc:
        _rollback(conn)
        if len(ops) == 1:  # re-running a lone op would only fail again
            ops[0].error = exc
            return False
        _one_by_one(conn, ops)
        return True
    _commit(conn)
    for op, result in zip(ops, results, strict=True):
        op.result = result
    return False


def _one_by_one(conn: sqlite3.Connection, ops: Sequence[_Op[Any]]) -> None:
    for index, op in enumerate(ops):
        try:
            _begin(conn)
        except Exception as exc:  # the database refuses transactions: fail the rest alike
            _fail(ops[index:], exc)
            return
        try:
            op.result = op.fn(conn)
            _commit(conn)
        except Exception as exc:
            _rollback(conn)
            op.error = exc


def _begin(conn: sqlite3.Connection) -> None:
    # IMMEDIATE takes the write lock up front: with a deferred BEGIN, an op that
    # reads before it writes can hit SQLITE_BUSY (which busy_timeout does not
    # retry) when another process committed in between.
    conn.execute("BEGIN IMMEDIATE")


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
