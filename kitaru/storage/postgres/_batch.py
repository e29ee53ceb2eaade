"""Group commit for the PostgreSQL store's small writes.

Three writes dominate a busy store: ``record((entry,), None)`` ending every
checkpoint, ``record((), patch)`` finishing a run, and ``create_run`` when a
flow starts. Each alone costs a transaction (a round trip, and a commit that
syncs the WAL); when many flows make them at once, that overhead is most of
what the client and the server do. So concurrent calls share transactions.

A :class:`WriteBatcher` has one leader connection of its own, outside the
pool (a checkout and release cost the client more than a short statement).
A call that finds it free runs at once, alone: an uncontended write never
waits for anyone. The calls that arrive meanwhile queue, and when its own
call is done the leader sends the queue, batch after batch, until it is
empty. One leader per batcher measured better than two: two split the queue
into smaller batches, and each batch costs the client as much CPU as a
single write. The store keeps two batchers, one for checkpoints and run
completions and one for new runs, so a loop that starts flows one after
another never waits behind a batch of checkpoints.

A batch is one statement, so one transaction and one round trip: new runs,
patches and journal entries each ``SELECT ... FROM unnest(...)`` of one
array per column, only the parts the batch has (every array parameter costs
the client time to encode, even empty). A plain entry is an idempotent upsert
(never over a completed entry); a guarded call's entry is written only if its
patch's status guard held. One statement touches each row once, so a batch
carries at most one patch per run and one entry per position; a call that
would break that waits for the next statement. Each call is atomic (a call's
entries belong to one run: those of a run that does not exist are not
written, and their caller then gets the error on its own), and the calls of
a batch were in flight together, so any order among them is one they could
have run in.

Faults: a batch is tried once. If it fails, each of its calls runs again on
its own through the store's ordinary retrying path, by its own caller, so an
error (an entry of an unknown run, ...) reaches only the caller whose call
caused it. When the batch's connection was lost after it was sent, the batch
may have committed, so those re-runs start in "uncertain" mode and check
their effects before writing (see :mod:`kitaru.storage.postgres`); any other
failure rolled the whole batch back, and the re-runs are first attempts. A
new run whose id exists already is left to its caller too, who then reads
the stored record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from . import _ops as ops
from . import _writes as writes
from ._faults import discard, fault

if TYPE_CHECKING:
    from ..base import JournalEntry, RunPatch, RunRecord
    from ._ops import Connection

__all__ = ("Alone", "Lease", "WriteBatcher")

T = TypeVar("T")

log = logging.getLogger("kitaru.storage.postgres")

#: At most this many calls share one transaction; the rest wait for the next.
MAX_BATCH = 256
_CLOSE_TIMEOUT = 10.0

#: A connection for one attempt: an async context manager, as ``pool.acquire()``.
Lease = Callable[[], AbstractAsyncContextManager["Connection"]]
#: Runs one call on its own through the store's retrying path: the bool is
#: "uncertain", the lease (``None``: the pool) lends the connection.
Alone = Callable[[bool, "Lease | None"], Awaitable[T]]


class _Writer:
    """A leader's own connection, outside the pool; opened on first use and after a fault.

    A pool checkout and release cost the client more than a short statement
    does, so a leader keeps its connection from one call to the next.
    ``lease()`` lends it as ``pool.acquire()`` lends a pooled one; the writer
    is its own (reusable) context manager, cheaper than a generator-based one.

    The store's ``command_timeout`` is not asyncpg's here: asyncpg arms and
    cancels a timer for every statement, several microseconds each, which a
    sequential flow pays on every checkpoint. Instead the connection carries
    the server's ``statement_timeout`` (the server cancels a statement that
    runs too long, say behind a lock, and rolls it back: the store retries
    it as any rolled-back attempt), and a watchdog covers a network that
    died silently: a statement only notes when it went out, and one timer,
    re-armed at most once per period, closes the connection under a
    statement that has had no answer ``limit`` seconds after it went out
    (its caller then retries, uncertain, as after any lost connection).
    Closing the connection alone could leave the statement running on the
    server, to commit after the retry; the server's timeout has ended it by
    then, which is why the watchdog waits longer. Behind a pooler that will
    not pass ``statement_timeout`` on, the connection has asyncpg's
    ``command_timeout`` instead (``PostgresStore._connect_writer``).
    """

    __slots__ = ("_timer", "conn", "connect", "limit", "since", "where")

    def __init__(
        self, connect: Callable[[], Awaitable[Connection]], limit: float | None, where: str
    ) -> None:
        self.connect = connect
        self.conn: Connection | None = None
        #: Seconds a statement may go unanswered before the connection is
        #: closed (``None``: no limit).
        self.limit = limit
        self.where = where
        #: When the statement in flight went out (monotonic), else ``None``.
        self.since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def lease(self) -> _Writer:
        return self

    async def __aenter__(self) -> Connection:
        conn = self.conn
        if conn is None or conn.is_closed():
            self.conn = None
            conn = self.conn = await self.connect()
        self.begin()
        return conn

    async def __aexit__(self, *exc: object) -> None:
        self.since = None

    def begin(self) -> None:
        """A statement goes out on ``conn``; end it with ``since = None``."""
        self.since = time.monotonic()
        if self._timer is None and self.limit is not None:
            self._timer = asyncio.get_running_loop().call_later(self.limit, self._check)

    def _check(self) -> None:
        self._timer = None
        since, limit, conn = self.since, self.limit, self.conn
        if since is None or limit is None or conn is None:
            return  # idle: the next statement arms the timer again
        left = since + limit - time.monotonic()
        if left > 0:  # a later statement than the one the timer was armed for
            self._timer = asyncio.get_running_loop().call_later(left, self._check)
            return
        log.warning(
            "%s: no answer to a statement for %g s; closing its connection (the call is retried)",
            self.where,
            limit,
        )
        self.since = None
        conn.terminate()

    def drop(self) -> Connection | None:
        conn, self.conn, self.since = self.conn, None, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return conn


class _Call(Generic[T]):
    """One queued write: new ``run``, or ``entries`` with an optional ``patch``."""

    __slots__ = ("alone", "entries", "patch", "rerun", "result", "run")

    def __init__(
        self,
        alone: Alone[T],
        entries: Sequence[JournalEntry] = (),
        patch: RunPatch | None = None,
        run: RunRecord | None = None,
    ) -> None:
        self.alone = alone
        self.entries = entries
        self.patch = patch
        self.run = run
        self.result: T | None = None
        #: Set when the batch did not settle the call: its caller runs it
        #: alone, uncertain (True) or not (False).
        self.rerun: bool | None = None


class _Batch:
    __slots__ = ("calls", "done")

    def __init__(self) -> None:
        self.calls: list[_Call[Any]] = []
        # One event per batch wakes all its callers at once.
        self.done = anyio.Event()


class WriteBatcher:
    """Batches concurrent small writes of one store into shared transactions.

    Args:
        check_open: raises when the store is closed.
        cx: the store's statement context.
        driver: the asyncpg module (to classify failures).
        connect: opens the leader's connection (outside the pool), with the
            server's ``statement_timeout`` instead of asyncpg's ``command_timeout``.
        command_timeout: seconds after which a statement with no answer
            closes its connection (``None``: never).
        where: the store, redacted, for log lines.
    """

    def __init__(
        self,
        check_open: Callable[[], object],
        cx: ops.Context,
        driver: Any,
        connect: Callable[[], Awaitable[Connection]],
        command_timeout: float | None,
        where: str,
    ) -> None:
        self._check_open = check_open
        self._cx = cx
        self._driver = driver
        self._writer = _Writer(connect, command_timeout, where)
        self._busy = False
        self._pending: list[_Batch] = []
        #: Statements sent for batches, the calls they carried, and how many
        #: of them failed (their calls re-run one by one).
        self.batches = 0
        self.batched = 0
        self.fallbacks = 0

    async def record(
        self, entries: Sequence[JournalEntry], patch: RunPatch | None, alone: Alone[bool]
    ) -> bool:
        """``store.record(entries, patch)``; ``alone`` runs it on its own."""
        if not _batchable(entries, patch):
            return await alone(False, None)
        cx = self._cx
        return await self._submit(
            _Call(alone, entries, patch),
            lambda conn: writes.record(conn, cx, entries, patch, False),
        )

    async def create_run(
        self, run: RunRecord, alone: Alone[tuple[RunRecord, bool]]
    ) -> tuple[RunRecord, bool]:
        """``store.create_run(run)`` (no journal); ``alone`` runs it on its own."""
        cx = self._cx
        return await self._submit(
            _Call(alone, run=run), lambda conn: writes.create_run(conn, cx, run, (), False)
        )

    async def aclose(self) -> None:
        """Close the leader's connection."""
        conn = self._writer.drop()
        if conn is not None:
            try:
                with anyio.fail_after(_CLOSE_TIMEOUT):
                    await conn.close()
            except Exception:
                conn.terminate()

    def terminate(self) -> None:
        """Drop the leader's connection without a goodbye (the store was never closed)."""
        conn = self._writer.drop()
        if conn is not None:
            conn.terminate()

    async def _submit(self, call: _Call[T], direct: Callable[[Connection], Awaitable[T]]) -> T:
        if not self._busy:
            # Nothing in flight: run at once, alone; others queue meanwhile.
            self._busy = True
            writer = self._writer
            try:
                return await self._first(call, direct)
            except anyio.get_cancelled_exc_class():
                # The statement may still be running on the connection: a new one.
                conn = writer.drop()
                if conn is not None:
                    conn.terminate()
                raise
            finally:
                if self._pending:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
                self._busy = False
        pending = self._pending
        if not pending or len(pending[-1].calls) >= MAX_BATCH:
            pending.append(_Batch())
        batch = pending[-1]
        batch.calls.append(call)
        try:
            await batch.done.wait()
        except anyio.get_cancelled_exc_class():
            if batch in pending:  # not sent yet: it must not commit
                batch.calls.remove(call)
            raise
        if call.rerun is not None:
            return await call.alone(call.rerun, None)
        return call.result  # type: ignore[return-value]  # set when rerun is None

    async def _first(self, call: _Call[T], direct: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``call`` alone on the leader's connection, once, with no retry loop.

        The common case (an open connection, no failure) then costs one
        statement and little else: this is a sequential flow's every
        checkpoint. A failure hands the call to the store's retrying path,
        as a failed batch does (uncertain if the connection was lost after
        the statement went out; a statement that failed otherwise rolled back).
        """
        writer = self._writer
        conn = writer.conn
        if conn is None or conn.is_closed():
            return await call.alone(False, writer.lease)
        self._check_open()
        writer.begin()
        try:
            return await direct(conn)
        except Exception as exc:
            lost = fault(self._driver, exc) == "lost"
            discard(self._driver, conn, exc)
        finally:
            writer.since = None
        return await call.alone(lost, writer.lease)

    async def _drain(self) -> None:
        """Send the queued batches until nothing is left."""
        try:
            while self._pending:
                batch = self._pending.pop(0)
                try:
                    await self._send(batch.calls, self._writer)
                finally:
                    batch.done.set()
        finally:
            # Only reached with batches queued if something outside Exception
            # escaped; never leave a caller waiting forever.
            for batch in self._pending:
                for call in batch.calls:
                    call.rerun = False
                batch.done.set()
            self._pending.clear()

    async def _send(self, calls: list[_Call[Any]], writer: _Writer) -> None:
        while calls:
            now, calls = _split(calls)
            await self._attempt(now, writer)

    async def _write(self, conn: Connection, calls: list[_Call[Any]]) -> None:
        runs: list[RunRecord] = []
        entries: list[JournalEntry] = []
        guarded: list[tuple[JournalEntry | None, RunPatch]] = []
        for call in calls:
            if call.run is not None:
                runs.append(call.run)
            elif call.patch is None:
                entries.extend(call.entries)
            else:
                guarded.append((call.entries[0] if call.entries else None, call.patch))
        # Run rows are locked in the order of the patches: keep it stable, so
        # two writers patching the same runs cannot deadlock.
        guarded.sort(key=lambda pair: pair[1].run_id)
        created, patched, missing = await writes.write_batch(conn, self._cx, runs, entries, guarded)
        for call in calls:
            new, patch = call.run, call.patch
            if new is not None:
                if new.id in created:
                    created.discard(new.id)  # the same id twice: the second one exists
                    call.result = (new, True)
                else:
                    call.rerun = False  # it exists: its caller reads the stored record
            elif patch is not None:
                call.result = patch.run_id in patched
            elif call.entries[0].run_id in missing:
                call.rerun = False  # nothing written: alone, it raises "unknown run"
            else:
                call.result = True

    async def _attempt(self, calls: list[_Call[Any]], writer: _Writer) -> None:
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
                    await self._write(conn, calls)
                except Exception as exc:
                    discard(asyncpg, conn, exc)
                    raise
        except Exception as exc:
            self.fallbacks += 1
            # A lost reply may hide a commit: the re-runs check their effects first.
            uncertain = sent and fault(asyncpg, exc) == "lost"
            for call in calls:
                call.rerun = uncertain


def _batchable(entries: Sequence[JournalEntry], patch: RunPatch | None) -> bool:
    """Whether a ``record`` call fits a batch statement.

    One run per call: a plain call's entries are written only if their run
    exists, and a guarded call's entry only if its own run's patch applied,
    so the statement's tests are the call's, all or nothing.
    """
    if patch is None:
        return bool(entries) and all(e.run_id == entries[0].run_id for e in entries)
    return len(entries) <= 1 and all(e.run_id == patch.run_id for e in entries)


def _split(calls: list[_Call[Any]]) -> tuple[list[_Call[Any]], list[_Call[Any]]]:
    """The calls one statement can carry, and the rest (for the next one).

    One statement touches each row once: one patch per run, and a guarded
    call's entry must not share its position with another entry.
    """
    now: list[_Call[Any]] = []
    later: list[_Call[Any]] = []
    patched: set[str] = set()
    plain: set[tuple[str, int]] = set()
    guarded: set[tuple[str, int]] = set()
    for call in calls:
        patch = call.patch
        keys = [(e.run_id, e.position) for e in call.entries]
        if patch is None:
            if any(key in guarded for key in keys):
                later.append(call)
                continue
            plain.update(keys)
        else:
            if patch.run_id in patched or any(k in plain or k in guarded for k in keys):
                later.append(call)
                continue
            patched.add(patch.run_id)
            guarded.update(keys)
        now.append(call)
    return now, later
