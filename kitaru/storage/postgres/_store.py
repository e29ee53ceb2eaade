"""The PostgreSQL run store's class: its public methods and how they reach the server.

The design (one statement per mutation, group commit, claiming, wake-ups,
connection faults) is told in :mod:`kitaru.storage.postgres`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Self, TypeVar

from .._resource import StoreResource
from .._url import redact
from ..base import JournalEntry, Message, RunPatch, RunRecord, Unhosted
from . import _ops as ops
from . import _writes as writes
from ._batch import Lease, WriteBatcher
from ._connect import Connector, Op, close_pool, driver
from ._listen import Listener
from ._url import parse_url

if TYPE_CHECKING:
    from asyncpg import Pool

__all__ = ("PostgresStore",)

T = TypeVar("T")

#: Concurrent checkpoint writes share transactions (see kitaru.storage.postgres._batch).
GROUP_COMMIT = True
#: How messages name the runs of each kind (``due`` and ``orphans`` share their code).
_RUNS = {"due": "due runs", "orphans": "orphaned runs"}


class PostgresStore(StoreResource):
    """Run store in a PostgreSQL database, shared by any number of worker processes.

    The constructor does no I/O; ``await store.open()`` (or ``async with``)
    creates the connection pool and creates or migrates the schema.

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?schema=NAME&...]``;
            see the module docstring for the parameters.

    Raises:
        ConfigurationError: ``url`` is not a usable PostgreSQL URL, or asyncpg
            is not installed.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._settings = settings = parse_url(url)
        driver()
        self._connector = Connector(url, settings, self._check_not_closed)
        self._where = self._connector.where
        self._pool: Pool | None = None
        self._origin = secrets.token_hex(8)
        self._cx = ops.Context.of(settings.schema, settings.channel, self._origin)
        self._listener = Listener(
            self._connector.connect_listener,
            settings.channel,
            self._origin,
            self._where,
            self._connector.describe,
            enabled=settings.listen,
        )
        # Group commit (kitaru.storage.postgres._batch): checkpoints and run
        # completions share transactions, and so do new runs.
        self._records: WriteBatcher | None = None
        self._starts: WriteBatcher | None = None
        if GROUP_COMMIT:
            self._records = self._batcher()
            self._starts = self._batcher()
        #: Bumped by this store's own writes; change_token() adds the listener's count.
        self._version = 0

    def __repr__(self) -> str:
        return f"PostgresStore({self._connector.scrub(redact(self.url))!r})"

    async def open(self) -> Self:
        """Create the pool and create or migrate the schema; returns the store itself.

        Connection faults are retried for ``retry_for`` seconds, as for any call.

        Raises:
            StorageError: the server cannot be reached, refuses the login, or
                the schema holds someone else's tables, or the store was closed.
            SchemaVersionError: a newer kitaru wrote the schema.
        """
        return await super().open()

    async def _setup(self) -> None:
        connector = self._connector
        await connector.retrying("create or migrate the schema", lambda _state: connector.migrate())
        self._pool = await connector.retrying("connect", lambda _state: connector.create_pool())

    async def _teardown(self) -> None:
        # The listener, the group-commit connections, then the pool.
        await self._listener.aclose()
        for batcher in (self._records, self._starts):
            if batcher is not None:
                await batcher.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)

    def _abandon(self) -> None:
        # Drop the sockets, or asyncpg's own connections would warn as well.
        self._listener.terminate()
        for batcher in (self._records, self._starts):
            if batcher is not None:
                batcher.terminate()
        pool = self._pool
        if pool is not None:
            pool.terminate()

    # -- wake-ups: the SignalsChanges and AnnouncesRunnable capabilities -----------------

    async def wait_for_change(self, token: int, max_wait: float) -> int:
        """Wait until another process signals a change after ``token``; return the new token.

        ``token`` is a value this method returned before (start with 0).
        Returns as soon as a NOTIFY from another process arrives (a posted
        message, a deadline handed over) or the LISTEN connection was
        re-established, else after ``max_wait`` seconds with ``token`` unchanged.
        Without a LISTEN connection (``?listen=off``, or while it reconnects)
        it returns a new token after ``max_wait``, so callers poll at that pace.
        """
        self._open_pool()
        return await self._listener.wait(token, max_wait)

    def deadline_token(self) -> int:
        """A number that moves when another process handed over a suspended run's deadline."""
        return self._listener.deadlines

    def runnable_token(self) -> int:
        """A number that moves when another process left a run for any worker."""
        return self._listener.runnables

    async def announce_runnable(self) -> None:
        """Tell the other processes' runtimes that a run waits for a worker (a NOTIFY)."""
        await self._call("announce a run", lambda c, _: ops.announce(c, self._cx))

    @property
    def listener_pid(self) -> int | None:
        """Server process id of the LISTEN connection, if it is up (diagnostics)."""
        return self._listener.backend_pid

    # -- reads --------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None`` if there is no such run."""
        return await self._call("read a run", lambda c, _: ops.get_run(c, self._cx, run_id))

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first (older than run ``before``)."""
        return await self._call(
            "list runs", lambda c, _: ops.list_runs(c, self._cx, status, flow, limit, before)
        )

    async def find_runs(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids of runs whose id starts with ``prefix``, in id order (at most ``limit``)."""
        return await self._call("find runs", lambda c, _: ops.find_runs(c, self._cx, prefix, limit))

    async def tree_usage(self, run_id: str) -> tuple[int, float | None]:
        """Tokens and cost of the run and every run below it (child flows)."""
        return await self._call(
            "sum a run's usage", lambda c, _: ops.tree_usage(c, self._cx, run_id)
        )

    async def journal_counts(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Journal sizes of ``run_ids`` (runs without entries are absent)."""
        ids = list(run_ids)
        return await self._call(
            "count journal entries", lambda c, _: ops.journal_counts(c, self._cx, ids)
        )

    async def load_journal(self, run_id: str) -> list[JournalEntry]:
        """The run's journal ordered by position."""
        return await self._call(
            "load a journal", lambda c, _: ops.load_journal(c, self._cx, run_id)
        )

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
        return await self._call(
            f"find {_RUNS[kind]}",
            lambda c, _: ops.unhosted(c, self._cx, kind, flows, now, dead_owners, limit),
        )

    async def next_wake(self, flows: Sequence[str], *, now: float) -> float | None:
        """The earliest ``wake_at`` among suspended runs of ``flows`` nobody hosts."""
        return await self._call(
            "find the next deadline", lambda c, _: ops.next_wake(c, self._cx, flows, now)
        )

    async def owners(self) -> list[str]:
        """Distinct owners currently holding the lease of an active run."""
        return await self._call("list lease owners", lambda c, _: ops.owners(c, self._cx))

    async def next_message(self, run_id: str, topic: str) -> Message | None:
        """The oldest unconsumed message of ``run_id`` on ``topic``."""
        return await self._call(
            "read a message", lambda c, _: ops.next_message(c, self._cx, run_id, topic)
        )

    async def message_with_key(self, run_id: str, key: str) -> Message | None:
        """The message ``run_id`` accepted with idempotency ``key``, consumed or not."""
        return await self._call(
            "read a message", lambda c, _: ops.message_with_key(c, self._cx, run_id, key)
        )

    async def messages_after(self, after_id: int, limit: int = 1000) -> list[Message]:
        """Unconsumed messages with an id above ``after_id``, oldest first."""
        return await self._call(
            "list messages", lambda c, _: ops.messages_after(c, self._cx, after_id, limit)
        )

    async def change_token(self) -> int:
        """A number that changes whenever this store, or another process, committed.

        Costs no query: this store counts its own writes, and the LISTEN
        connection counts other processes' notifications. Those are sent for
        the writes a poller acts on (a posted message, a deadline handed
        over), not for every checkpoint: NOTIFY serialises the commits that
        send it. While the listener is down, every call reports a change.
        """
        self._open_pool()
        if not await self._listener.ensure():
            self._version += 1
        return self._version + self._listener.signals

    # -- mutations ----------------------------------------------------------------------

    async def create_run(
        self, run: RunRecord, journal: Sequence[JournalEntry] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` (with ``journal``, in the same transaction) unless its id exists.

        Returns the stored record and whether this call created it.
        """
        if journal or self._starts is None:
            return await self._create_alone(run, journal, False, None)
        try:
            return await self._starts.create_run(
                run, lambda uncertain, lease: self._create_alone(run, (), uncertain, lease)
            )
        finally:
            self._version += 1

    async def _create_alone(
        self,
        run: RunRecord,
        journal: Sequence[JournalEntry],
        uncertain: bool,
        lease: Lease | None,
    ) -> tuple[RunRecord, bool]:
        """``create_run`` in a transaction of its own (arguments as for ``_record_alone``)."""
        return await self._write(
            "create a run",
            lambda c, u: writes.create_run(c, self._cx, run, journal, u),
            uncertain=uncertain,
            lease=lease,
        )

    async def record(self, entries: Sequence[JournalEntry], patch: RunPatch | None = None) -> bool:
        """Atomically write journal entries (never over a completed one) and apply ``patch``.

        Returns ``False`` and writes nothing when the run's status is not in
        ``patch.expect``.

        Raises:
            StorageError: an entry belongs to a run that does not exist.
        """
        if self._records is None:
            return await self._record_alone(entries, patch, False, None)
        try:
            return await self._records.record(
                entries,
                patch,
                lambda uncertain, lease: self._record_alone(entries, patch, uncertain, lease),
            )
        finally:
            self._version += 1

    async def _record_alone(
        self,
        entries: Sequence[JournalEntry],
        patch: RunPatch | None,
        uncertain: bool,
        lease: Lease | None,
    ) -> bool:
        """``record`` in a transaction of its own; ``uncertain`` as after a lost connection.

        ``lease`` lends the connection instead of the pool.
        """
        return await self._write(
            "record journal entries",
            lambda c, u: writes.record(c, self._cx, entries, patch, u),
            uncertain=uncertain,
            lease=lease,
        )

    async def update_run(self, patch: RunPatch) -> RunRecord | None:
        """Apply ``patch`` if the run's status is in ``patch.expect``; else ``None``."""
        return await self._write(
            "update a run", lambda c, u: writes.update_run(c, self._cx, patch, u)
        )

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
        return await self._write(
            "claim a run",
            lambda c, _: ops.claim(c, self._cx, run_id, owner, now, lease_until, dead_owners),
        )

    async def claim_due(
        self,
        flows: Sequence[str],
        owner: str,
        *,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[RunRecord]:
        """Lease to ``owner`` the runs :meth:`due` would list, most overdue first, in one statement.

        Rows another worker is claiming at that moment are skipped (``FOR
        UPDATE SKIP LOCKED``): polling workers split the due runs, not queue.
        """
        return await self._claim_unhosted("due", flows, owner, now, lease_until, dead_owners, limit)

    async def claim_orphans(
        self,
        flows: Sequence[str],
        owner: str,
        *,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[RunRecord]:
        """Lease to ``owner`` the runs :meth:`orphans` would list, oldest first, in one statement.

        Skips rows another worker is claiming, as :meth:`claim_due` does; after
        a lost connection the retry also returns the runs the first attempt leased.
        """
        return await self._claim_unhosted(
            "orphans", flows, owner, now, lease_until, dead_owners, limit
        )

    async def _claim_unhosted(
        self,
        kind: Unhosted,
        flows: Sequence[str],
        owner: str,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str],
        limit: int,
    ) -> list[RunRecord]:
        return await self._write(
            f"claim {_RUNS[kind]}",
            lambda c, u: ops.claim_unhosted(
                c, self._cx, kind, flows, owner, now, lease_until, dead_owners, limit, u
            ),
        )

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        """Extend every lease ``owner`` holds; returns how many."""
        return await self._write(
            "renew leases", lambda c, _: ops.renew_leases(c, self._cx, owner, lease_until)
        )

    async def release(self, owner: str, run_ids: Sequence[str] | None = None) -> None:
        """Give up ``owner``'s leases (all of them when ``run_ids`` is ``None``)."""
        await self._write("release leases", lambda c, _: ops.release(c, self._cx, owner, run_ids))

    async def post(self, message: Message) -> tuple[Message, bool]:
        """Put ``message`` in its run's mailbox, unless its key was seen for the run.

        Returns the stored message (with its id) and whether this call stored it.
        """
        nonce = secrets.token_hex(16)  # one per call: its retries find what it stored
        return await self._write(
            "post a message", lambda c, _: ops.post(c, self._cx, message, nonce)
        )

    async def consume(
        self, message_id: int, entry: JournalEntry | None, patch: RunPatch | None
    ) -> bool:
        """Atomically mark a message consumed, record ``entry`` and apply ``patch``.

        Returns ``False`` (writing nothing) if the message was consumed already
        or the patch's status expectation does not hold.
        """
        return await self._write(
            "consume a message",
            lambda c, u: writes.consume(c, self._cx, message_id, entry, patch, u),
        )

    async def reset_journal(self, patch: RunPatch) -> bool:
        """Delete the run's journal and apply ``patch``, if the run's status matches."""
        return await self._write(
            "reset a journal", lambda c, u: writes.reset_journal(c, self._cx, patch, u)
        )

    # -- plumbing -------------------------------------------------------------------------

    def _open_pool(self) -> Pool:
        self._check_open()
        assert self._pool is not None
        return self._pool

    def _check_not_closed(self) -> None:
        # Between retries: a store may close while one of its calls waits.
        if self._state == "closed":
            raise self._closed_error()

    async def _write(
        self, action: str, op: Op[T], *, uncertain: bool = False, lease: Lease | None = None
    ) -> T:
        try:
            return await self._call(action, op, uncertain=uncertain, lease=lease)
        finally:
            self._version += 1

    async def _call(
        self, action: str, op: Op[T], *, uncertain: bool = False, lease: Lease | None = None
    ) -> T:
        """Run ``op`` on a pooled connection (or ``lease``'s), retrying connection faults."""
        pool = self._open_pool()  # raises once the store is closed, lease or not
        acquire = lease or pool.acquire
        return await self._connector.call(acquire, action, op, uncertain=uncertain)

    def _batcher(self) -> WriteBatcher:
        connector = self._connector
        return WriteBatcher(
            self._open_pool,
            self._cx,
            driver(),
            connector.connect_writer,
            connector.writer_silence,
            self._where,
        )
