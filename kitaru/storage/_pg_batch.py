"""Group commit for the PostgreSQL store's checkpoint writes.

Every checkpoint ends in ``record((entry,), patch)``, the patch usually
``None``. When many flows finish checkpoints at the same moment, each call
costing its own transaction (a pool checkout, a round trip, a commit), the
client and the server spend most of their time on that per-transaction
overhead. Here a caller that finds fewer than ``max_leaders`` leaders at work
becomes one: it runs its own call at once, alone (an uncontended call never
waits for anyone), and the calls that arrive meanwhile queue up. After its own
call the leader sends what is queued, batch after batch, until the queue is
empty:

- the calls without a patch as one ``INSERT ... SELECT FROM unnest(...)``
  statement (their own transaction; the entries are idempotent upserts, and
  one statement touches each row once, so a later entry for a position
  replaces an earlier one only if that one is unfinished);
- the calls with a patch and one entry as one pipeline of ``record_one``
  statements in one implicit transaction (one round trip, one commit), each
  call getting its own result (``False`` when its patch's guard refused).

Each call is atomic in its group's transaction. The calls of a batch were all
in flight together, so any order among them is one they could have run in.
Other shapes (several entries with a patch, a patch alone) run on their own.

Faults: a batch is tried once. If it fails, each of its calls runs again on
its own through the store's ordinary retrying path, by its own caller, so an
error (an entry of an unknown run, ...) reaches only the caller whose call
caused it. When the batch's connection was lost after it was sent, the batch
may have committed, so those re-runs start in "uncertain" mode and check
their effects before writing (see :mod:`kitaru.storage.postgres`); any other
failure rolled the whole batch back, and the re-runs are first attempts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio

from . import _pg_ops as ops
from ._pg_faults import fault

if TYPE_CHECKING:
    from ._pg_ops import Connection
    from .base import JournalEntry, RunPatch

__all__ = ("RecordBatcher",)

#: At most this many calls share one transaction; the rest wait for the next.
MAX_BATCH = 256
_CLOSE_TIMEOUT = 10.0

#: A connection for one attempt: an async context manager, as ``pool.acquire()``.
Lease = Callable[[], AbstractAsyncContextManager["Connection"]]
#: Runs one ``record`` call through the store's retrying path: the bool is
#: "uncertain", the lease (``None``: the pool) lends the connection.
Single = Callable[
    ["Sequence[JournalEntry]", "RunPatch | None", bool, "Lease | None"], Awaitable[bool]
]


class _Writer:
    """A leader's own connection, outside the pool; opened on first use and after a fault.

    A pool checkout and release cost the client more than a short statement
    does, so a leader keeps its connection from one call to the next.
    """

    __slots__ = ("conn", "connect")

    def __init__(self, connect: Callable[[], Awaitable[Connection]]) -> None:
        self.connect = connect
        self.conn: Connection | None = None

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Connection]:
        conn = self.conn
        if conn is None or conn.is_closed():
            self.conn = None
            conn = self.conn = await self.connect()
        yield conn

    def drop(self) -> Connection | None:
        conn, self.conn = self.conn, None
        return conn


class _Call:
    __slots__ = ("entries", "patch", "rerun", "result")

    def __init__(self, entries: Sequence[JournalEntry], patch: RunPatch | None) -> None:
        self.entries = entries
        self.patch = patch
        self.result = True
        #: Set when the batch failed: run again alone, uncertain (True) or not (False).
        self.rerun: bool | None = None


class _Batch:
    __slots__ = ("calls", "done")

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        # One event per batch wakes all its callers at once.
        self.done = anyio.Event()


class RecordBatcher:
    """Batches concurrent checkpoint writes of one store into shared transactions.

    Args:
        check_open: raises when the store is closed.
        cx: the store's statement context.
        single: runs one call on its own, with the store's fault handling.
        driver: the asyncpg module (to classify failures).
        connect: opens a connection for a leader (outside the pool).
        max_leaders: batches in flight at once (each leader has a connection).
    """

    def __init__(
        self,
        check_open: Callable[[], object],
        cx: ops.Context,
        single: Single,
        driver: Any,
        connect: Callable[[], Awaitable[Connection]],
        *,
        max_leaders: int = 1,
    ) -> None:
        self._check_open = check_open
        self._cx = cx
        self._single = single
        self._driver = driver
        self._writers = [_Writer(connect) for _ in range(max(1, max_leaders))]
        self._idle = list(self._writers)
        self._pending: list[_Batch] = []
        #: Transactions sent for two or more calls, the calls they carried, and
        #: how many of them failed and were re-run call by call.
        self.batches = 0
        self.batched = 0
        self.fallbacks = 0

    async def record(self, entries: Sequence[JournalEntry], patch: RunPatch | None) -> bool:
        """``store.record(entries, patch)``, sharing a transaction with concurrent calls."""
        if self._idle:
            writer = self._idle.pop()
            try:
                # Our own call first, at once; others queue while it is in flight.
                return await self._single(entries, patch, False, writer.lease)
            except anyio.get_cancelled_exc_class():
                # The statement may still be running on the connection: a new one.
                conn = writer.drop()
                if conn is not None:
                    conn.terminate()
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await self._drain(writer)
        if not entries or (patch is not None and len(entries) != 1):
            return await self._single(entries, patch, False, None)  # a shape no batch takes
        call = _Call(entries, patch)
        pending = self._pending
        if not pending or len(pending[-1].calls) >= MAX_BATCH:
            pending.append(_Batch())
        batch = pending[-1]
        batch.calls.append(call)
        try:
            await batch.done.wait()
        except anyio.get_cancelled_exc_class():
            if batch in self._pending:  # not sent yet: it must not commit
                batch.calls.remove(call)
            raise
        if call.rerun is not None:
            return await self._single(entries, patch, call.rerun, None)
        return call.result

    async def aclose(self) -> None:
        """Close the leaders' connections."""
        for writer in self._writers:
            conn = writer.drop()
            if conn is not None:
                try:
                    with anyio.fail_after(_CLOSE_TIMEOUT):
                        await conn.close()
                except Exception:
                    conn.terminate()

    def terminate(self) -> None:
        """Drop the leaders' connections without a goodbye (the store was never closed)."""
        for writer in self._writers:
            conn = writer.drop()
            if conn is not None:
                conn.terminate()

    async def _drain(self, writer: _Writer) -> None:
        """Send what queued while the leader's own call ran, until nothing is left."""
        try:
            while self._pending:
                batch = self._pending.pop(0)
                try:
                    await self._send(batch.calls, writer)
                finally:
                    batch.done.set()
        finally:
            self._idle.append(writer)
            if len(self._idle) == len(self._writers):
                # Only reached with batches queued if something outside
                # Exception escaped; never leave a caller waiting forever.
                for batch in self._pending:
                    for call in batch.calls:
                        call.rerun = False
                    batch.done.set()
                self._pending.clear()

    async def _send(self, calls: list[_Call], writer: _Writer) -> None:
        if len(calls) <= 1:  # nothing to share: the caller runs it on its own
            for call in calls:
                call.rerun = False
            return
        # Two transactions at most: one statement upserting the entries of the
        # calls without a patch (idempotent), and a pipeline for the guarded
        # ones. Each call is atomic in its own group's transaction; the calls
        # of a batch are concurrent, so any order among them is a valid one.
        plain = [c for c in calls if c.patch is None]
        guarded = [c for c in calls if c.patch is not None]
        if plain:
            entries = [e for c in plain for e in c.entries]
            await self._attempt(
                plain, writer, lambda conn: ops.upsert_many(conn, self._cx, entries)
            )
        if guarded:
            # Concurrent batches take the runs' row locks in one order (a
            # stable sort keeps each run's calls in the order they came), so
            # two of them can never deadlock.
            guarded.sort(key=_run_of)
            pairs = [(c.entries[0], c.patch) for c in guarded if c.patch is not None]

            async def pipeline(conn: Connection) -> None:
                results = await ops.record_many(conn, self._cx, pairs)
                for call, result in zip(guarded, results, strict=True):
                    call.result = result

            await self._attempt(guarded, writer, pipeline)

    async def _attempt(
        self,
        calls: list[_Call],
        writer: _Writer,
        send: Callable[[Connection], Awaitable[None]],
    ) -> None:
        """Send once; if that fails, mark ``calls`` to be re-run one by one."""
        self.batches += 1
        self.batched += len(calls)
        asyncpg = self._driver
        sent = False
        try:
            self._check_open()
            async with writer.lease() as conn:
                sent = True
                try:
                    await send(conn)
                except Exception as exc:
                    if fault(asyncpg, exc) == "lost":
                        with suppress(asyncpg.InterfaceError):
                            conn.terminate()
                    raise
        except Exception as exc:
            self.fallbacks += 1
            # A lost reply may hide a commit: the re-runs check their effects first.
            uncertain = sent and fault(asyncpg, exc) == "lost"
            for call in calls:
                call.rerun = uncertain


def _run_of(call: _Call) -> str:
    return call.patch.run_id if call.patch is not None else ""
