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

Inline commits: a WAL commit with ``synchronous=NORMAL`` does not fsync, so a
small batch commits in a few microseconds, less than one hop to a worker
thread and back costs (25 to 55 us measured here). So when the write lock is
free the leader commits on the event loop itself, with ``busy_timeout`` 0 so it
never waits there: if another process holds the lock, the batch goes to the
connection's worker thread, which waits for it. Large batches go to the thread
too (the loop keeps running flows meanwhile), and so does WAL checkpointing,
the one step that fsyncs (autocheckpoint is off; ``checkpoint`` is called every
``checkpoint_every`` batches and runs on another connection's thread).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast

import aiosqlite
import anyio
import anyio.lowlevel

from kitaru._errors import StorageError

__all__ = ("GroupCommitStatistics", "GroupCommitter", "raw_connection", "run_in_connection")

#: Batches of at most this many ops commit inline on the event loop.
INLINE_MAX_OPS = 64

T = TypeVar("T")
log = logging.getLogger("kitaru.storage")


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
    # Hand over the sqlite3 connection, never ``conn`` itself: the worker thread
    # keeps its last callable alive, and a reference from there to ``conn``
    # would stop an unclosed connection from being collected and its thread
    # from ever ending (the interpreter then hangs at exit).
    raw = conn._conn
    return execute(partial(fn, raw))


def raw_connection(conn: aiosqlite.Connection) -> sqlite3.Connection:
    """The sqlite3 connection inside ``conn`` (opened with ``check_same_thread=False``)."""
    raw: sqlite3.Connection = conn._conn
    return raw


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
    #: Batches committed on the event loop (the others used the worker thread).
    inline: int = 0


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
        inline: commit batches of up to ``INLINE_MAX_OPS`` ops on the event
            loop when the write lock is free; needs a connection opened with
            ``check_same_thread=False`` and ``busy_timeout`` 0.
        checkpoint: called every ``checkpoint_every`` batches (a WAL checkpoint
            on another connection, with autocheckpoint off on this one).
        busy_timeout_ms: with ``inline``, how long the worker thread waits for
            another process's write lock.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        inline: bool = False,
        checkpoint: Callable[[], Awaitable[None]] | None = None,
        checkpoint_every: int = 256,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self._conn = conn
        self._inline = inline
        self._busy_timeout_ms = busy_timeout_ms
        self._checkpoint = checkpoint
        self._checkpoint_every = checkpoint_every
        self._inline_batches = 0
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
        return GroupCommitStatistics(
            self._batches, self._ops, self._fallbacks, self._inline_batches
        )

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
                if self._inline:
                    # An inline commit never yields, so let every task that is
                    # ready right now queue its op first: that is the batch.
                    await anyio.lowlevel.checkpoint()
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
        if self._checkpoint is not None and self._batches % self._checkpoint_every == 0:
            try:
                await self._checkpoint()
            except Exception as exc:  # only lets the WAL grow until the next one
                log.warning("WAL checkpoint failed (%s); the next one will retry", exc)
        fell_back: bool | None = None
        if self._inline and len(ops) <= INLINE_MAX_OPS:
            try:
                fell_back = _commit_batch(raw_connection(self._conn), ops, wait=False)
                self._inline_batches += 1
            except _Busy:
                fell_back = None  # another process writes: wait for it off the loop
            except Exception as exc:  # a failing BEGIN/COMMIT fails the whole batch
                _fail(ops, exc)
                return
        if fell_back is None:
            waiting = self._busy_timeout_ms if self._inline else None
            try:
                fell_back = await run_in_connection(
                    self._conn, lambda c: _commit_waiting(c, ops, waiting)
                )
            except Exception as exc:  # e.g. the connection is gone
                _fail(ops, exc)
                return
        if fell_back:
            self._fallbacks += 1


def _fail(ops: Sequence[_Op[Any]], exc: BaseException) -> None:
    for op in ops:
        op.error = exc


# Everything below runs on the connection's worker thread, or inline on the
# loop when the write lock was free (``wait=False``).


class _Busy(Exception):
    """The inline attempt committed nothing; run the batch on the worker thread.

    Raised when another connection holds the write lock, or an op failed (so
    the batch must be split, which may wait for the lock).
    """


def _commit_batch(conn: sqlite3.Connection, ops: Sequence[_Op[Any]], *, wait: bool) -> bool:
    """Commit all ops in one transaction; if one raises, one transaction each.

    Returns whether the batch fell back to one transaction per op. A failing
    ``BEGIN`` or ``COMMIT`` is nobody's op in particular: it propagates, and
    every op of the batch fails with it (re-running would only wait on the
    same lock again, once per op). With ``wait=False`` a held write lock
    raises :class:`_Busy` before anything ran.
    """
    _begin(conn, wait=wait)
    try:
        results = [op.fn(conn) for op in ops]
    except Exception as exc:
        _rollback(conn)
        if not wait:
            # Sorting out which op failed takes one transaction per op, each of
            # which may have to wait for the lock: do it on the worker thread.
            raise _Busy from exc
        if len(ops) == 1:  # re-running a lone op would only fail again
            ops[0].error = exc
            return False
        _one_by_one(conn, ops)
        return True
    _commit(conn)
    for op, result in zip(ops, results, strict=True):
        op.result = result
    return False


def _commit_waiting(
    conn: sqlite3.Connection, ops: Sequence[_Op[Any]], busy_timeout_ms: int | None
) -> bool:
    """Commit on the worker thread, waiting up to ``busy_timeout_ms`` for the lock.

    An inline writer keeps busy_timeout at 0 for the loop's sake; here, off the
    loop, waiting is what we want.
    """
    if busy_timeout_ms is None:
        return _commit_batch(conn, ops, wait=True)
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
    try:
        return _commit_batch(conn, ops, wait=True)
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _one_by_one(conn: sqlite3.Connection, ops: Sequence[_Op[Any]]) -> None:
    for index, op in enumerate(ops):
        try:
            _begin(conn, wait=True)
        except Exception as exc:  # the database refuses transactions: fail the rest alike
            _fail(ops[index:], exc)
            return
        try:
            op.result = op.fn(conn)
            _commit(conn)
        except Exception as exc:
            _rollback(conn)
            op.error = exc


def _begin(conn: sqlite3.Connection, *, wait: bool) -> None:
    # IMMEDIATE takes the write lock up front: with a deferred BEGIN, an op that
    # reads before it writes can hit SQLITE_BUSY (which busy_timeout does not
    # retry) when another process committed in between. With ``wait`` the
    # connection's busy_timeout waits for the lock; without, a held lock raises
    # _Busy at once (the event loop must never wait).
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if wait or not getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
            raise
        raise _Busy from exc


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
