"""The PostgreSQL run store's class: its public methods and how they reach the server.

The design (one statement per mutation, group commit, claiming, wake-ups,
connection faults) is told in :mod:`kitaru.storage.postgres`.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio

from kitaru._errors import ConfigurationError, StorageError

from .._migrations import postgres as migrations
from .._resource import StoreResource
from .._url import redact
from ..base import JournalEntry, Message, RunPatch, RunRecord
from . import _ops as ops
from ._batch import Lease, WriteBatcher
from ._faults import Attempt, advice, discard, fault, is_driver_error
from ._listen import Listener
from ._sql import queries
from ._url import lock_key, parse_url

if TYPE_CHECKING:
    from asyncpg import Pool

    from ._ops import Connection

__all__ = ("PostgresStore",)

T = TypeVar("T")
Op = Callable[["Connection", bool], Awaitable[T]]

log = logging.getLogger("kitaru.storage.postgres")

_FIRST_RETRY = 0.05
_MAX_RETRY = 2.0
#: At most one "retrying" warning per store in this many seconds.
_WARN_EVERY = 5.0
#: A group-commit connection is closed this long (at most) after the server
#: should have cancelled a statement that still has no answer: the network died.
_SILENCE_GRACE = 5.0
_SHOW_TIMEOUT = "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"
_CLOSE_TIMEOUT = 10.0
#: Concurrent checkpoint writes share transactions (see kitaru.storage.postgres._batch).
GROUP_COMMIT = True


def _driver() -> Any:
    """The asyncpg module, imported on first use."""
    try:
        import asyncpg
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "the PostgreSQL run store needs asyncpg, which is not installed; pip install asyncpg"
        ) from exc
    return asyncpg


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
        self._settings = parse_url(url)
        _driver()
        settings = self._settings
        self._where = self._scrub(f"PostgreSQL store {redact(url)}")
        self._pool: Pool | None = None
        self._origin = secrets.token_hex(8)
        self._cx = ops.Context(
            q=queries(settings.schema),
            notify={
                "channel": settings.channel,
                "due_payload": f"d:{self._origin}",
                "message_payload": f"m:{self._origin}",
                "runnable_payload": f"r:{self._origin}",
            },
            post_lock=lock_key(settings.schema, "post"),
        )
        self._listener = Listener(
            self._connect_listener,
            settings.channel,
            self._origin,
            self._where,
            self._describe,
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
        self._warned = 0.0
        #: Whether the server keeps statement_timeout for the group-commit
        #: connections (``None``: not known yet; see _connect_writer).
        self._server_timeout: bool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._scrub(redact(self.url))!r})"

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
        settings = self._settings
        asyncpg = _driver()

        async def create() -> Pool:
            pool: Pool = await asyncpg.create_pool(
                settings.dsn,
                min_size=settings.pool_min,
                max_size=settings.pool_max,
                timeout=settings.connect_timeout,
                command_timeout=settings.command_timeout,
                statement_cache_size=settings.statement_cache_size,
                server_settings={"application_name": settings.application_name},
                reset=_keep_session,
            )
            return pool

        async def migrated() -> None:
            # A connection of its own: the migration lock is a session lock,
            # and closing the connection releases it whatever happened.
            conn = await self._connect("migrations")
            try:
                await migrations.migrate(conn, settings.schema, self._where)
            finally:
                with anyio.CancelScope(shield=True):
                    await _close(conn)

        await self._retrying("create or migrate the schema", lambda _state: migrated())
        self._pool = await self._retrying("connect", lambda _state: create())

    async def _teardown(self) -> None:
        # The listener, the group-commit connections, then the pool.
        await self._listener.aclose()
        for batcher in (self._records, self._starts):
            if batcher is not None:
                await batcher.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            await _close_pool(pool)

    def _abandon(self) -> None:
        # Drop the sockets, or asyncpg's own connections would warn as well.
        self._listener.terminate()
        for batcher in (self._records, self._starts):
            if batcher is not None:
                batcher.terminate()
        pool = self._pool
        if pool is not None:
            pool.terminate()

    # -- wake-ups (beyond the RunStore Protocol) ---------------------------------------

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
        """Tell the other processes' runtimes that a run waits for a worker (a NOTIFY).

        Not part of the RunStore Protocol: stores without it are swept every second.
        """
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
        return await self._call(
            "find orphaned runs",
            lambda c, _: ops.orphans(c, self._cx, flows, now, dead_owners, limit),
        )

    async def due(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Suspended runs of ``flows`` nobody live hosts whose ``wake_at`` has passed."""
        return await self._call(
            "find due runs", lambda c, _: ops.due(c, self._cx, flows, now, dead_owners, limit)
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
            lambda c, u: ops.create_run(c, self._cx, run, journal, u),
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
            lambda c, u: ops.record(c, self._cx, entries, patch, u),
            uncertain=uncertain,
            lease=lease,
        )

    async def update_run(self, patch: RunPatch) -> RunRecord | None:
        """Apply ``patch`` if the run's status is in ``patch.expect``; else ``None``."""
        return await self._write("update a run", lambda c, u: ops.update_run(c, self._cx, patch, u))

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
        """Claim the due suspended runs of ``flows`` that nobody live hosts, in one statement.

        The runs :meth:`due` would list, most overdue first, leased to
        ``owner`` until ``lease_until``. Rows another worker is claiming at
        the same moment are skipped (``FOR UPDATE SKIP LOCKED``), so workers
        polling together split the due runs between them instead of queueing
        on the same rows. Not part of the RunStore Protocol.
        """
        return await self._write(
            "claim due runs",
            lambda c, u: ops.claim_due(
                c, self._cx, flows, owner, now, lease_until, dead_owners, limit, u
            ),
        )

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
        """Claim the ``running`` runs of ``flows`` that nobody live hosts, in one statement.

        The runs :meth:`orphans` would list (owner empty, in ``dead_owners``
        or with a lapsed lease), oldest first, leased to ``owner`` until
        ``lease_until``. Rows another worker is claiming at the same moment
        are skipped (``FOR UPDATE SKIP LOCKED``), so workers sweeping together
        split a burst of new runs instead of queueing on the same rows. After
        a lost connection the retry also returns runs the first attempt
        leased. Not part of the RunStore Protocol.
        """
        return await self._write(
            "claim orphaned runs",
            lambda c, u: ops.claim_orphans(
                c, self._cx, flows, owner, now, lease_until, dead_owners, limit, u
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
            lambda c, u: ops.consume(c, self._cx, message_id, entry, patch, u),
        )

    async def reset_journal(self, patch: RunPatch) -> bool:
        """Delete the run's journal and apply ``patch``, if the run's status matches."""
        return await self._write(
            "reset a journal", lambda c, u: ops.reset_journal(c, self._cx, patch, u)
        )

    # -- plumbing -------------------------------------------------------------------------

    def _open_pool(self) -> Pool:
        self._check_open()
        assert self._pool is not None
        return self._pool

    async def _write(
        self, action: str, op: Op[T], *, uncertain: bool = False, lease: Lease | None = None
    ) -> T:
        try:
            return await self._call(action, op, uncertain=uncertain, lease=lease)
        finally:
            self._version += 1

    async def _call(
        self,
        action: str,
        op: Op[T],
        *,
        opening: bool = False,
        uncertain: bool = False,
        lease: Lease | None = None,
    ) -> T:
        """Run ``op`` on a pooled connection, retrying connection faults (module docstring)."""
        pool = self._pool if opening else self._open_pool()
        assert pool is not None
        asyncpg = _driver()

        acquire = lease or pool.acquire

        async def attempt(state: Attempt) -> T:
            async with acquire() as conn:
                state.sent = True  # from here on, a lost connection leaves the outcome unknown
                try:
                    return await op(conn, state.uncertain)
                except Exception as exc:
                    discard(asyncpg, conn, exc)
                    raise

        return await self._retrying(action, attempt, uncertain=uncertain)

    async def _retrying(
        self,
        action: str,
        attempt: Callable[[Attempt], Awaitable[T]],
        *,
        uncertain: bool = False,
    ) -> T:
        asyncpg = _driver()
        state = Attempt()
        state.uncertain = uncertain
        started: float | None = None
        # The first retry is immediate: most faults are a pooled connection
        # that died while idle, and the pool replaces it at once.
        delay = 0.0
        while True:
            state.sent = False
            try:
                return await attempt(state)
            except Exception as exc:
                kind = fault(asyncpg, exc)
                if kind is None:
                    if isinstance(exc, StorageError) or not is_driver_error(asyncpg, exc):
                        raise
                    raise self._error(action, exc) from self._cause(exc)
                if kind == "lost" and state.sent:
                    state.uncertain = True
                now = time.monotonic()
                if started is None:
                    started = now
                waited = now - started
                if waited + delay > self._settings.retry_for:
                    raise self._error(action, exc, gave_up=waited) from self._cause(exc)
                if now - self._warned >= _WARN_EVERY:
                    self._warned = now
                    log.warning(
                        "%s: %s while trying to %s (%s); retrying for up to %g s",
                        self._where,
                        "connection fault" if kind == "lost" else "transaction rolled back",
                        action,
                        self._describe(exc),
                        self._settings.retry_for,
                    )
            await anyio.sleep(delay)
            delay = min(max(delay * 2, _FIRST_RETRY), _MAX_RETRY)
            if self._state == "closed":
                raise self._closed_error()

    async def _connect(self, role: str) -> Connection:
        """A connection outside the pool (``role`` is added to its application name)."""
        settings = self._settings
        conn: Connection = await _driver().connect(
            settings.dsn,
            timeout=settings.connect_timeout,
            command_timeout=settings.command_timeout,
            statement_cache_size=0,
            server_settings={"application_name": f"{settings.application_name} {role}"},
        )
        return conn

    def _batcher(self) -> WriteBatcher:
        limit = self._settings.command_timeout
        return WriteBatcher(
            self._open_pool,
            self._cx,
            _driver(),
            self._connect_writer,
            None if limit is None else limit + min(limit, _SILENCE_GRACE),
            self._where,
        )

    async def _connect_writer(self) -> Connection:
        """A group-commit leader's connection: the server keeps its statement timeout.

        See :class:`kitaru.storage.postgres._batch.WriteBatcher` for why not asyncpg.
        A pooler in between (PgBouncer) may refuse the startup parameter, or
        accept and drop it; either way the connection then gets asyncpg's
        ``command_timeout`` like the pool's, found out once per store.
        """
        settings = self._settings
        limit = settings.command_timeout
        asyncpg = _driver()

        async def connect(command_timeout: float | None, **extra: str) -> Connection:
            conn: Connection = await asyncpg.connect(
                settings.dsn,
                timeout=settings.connect_timeout,
                command_timeout=command_timeout,
                statement_cache_size=settings.statement_cache_size,
                server_settings={"application_name": settings.application_name, **extra},
            )
            return conn

        if limit is None or self._server_timeout is False:
            return await connect(limit)
        ms = str(max(1, math.ceil(limit * 1000)))
        try:
            conn = await connect(None, statement_timeout=ms)
        except asyncpg.ProtocolViolationError as exc:
            if "startup parameter" not in str(exc):
                raise
            self._no_server_timeout(self._describe(exc))
            return await connect(limit)
        if self._server_timeout:
            return conn
        try:
            held = await conn.fetchval(_SHOW_TIMEOUT, timeout=settings.connect_timeout)
        except BaseException:
            conn.terminate()
            raise
        if held == ms:
            self._server_timeout = True
            return conn
        await _close(conn)
        self._no_server_timeout(f"the server reports statement_timeout={held} ms")
        return await connect(limit)

    def _no_server_timeout(self, why: str) -> None:
        self._server_timeout = False
        log.info(
            "%s: the server does not keep statement_timeout for the group-commit connections "
            "(%s; a pooler in between?); they use asyncpg's command_timeout instead",
            self._where,
            why,
        )

    async def _connect_listener(self) -> Connection:
        return await self._connect("listener")

    def _scrub(self, text: str) -> str:
        secret = self._settings.secret
        return text.replace(secret, "***") if secret else text

    def _describe(self, exc: BaseException) -> str:
        """``Type: message`` of a driver exception, safe to log."""
        text = str(exc)
        return self._scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def _cause(self, exc: BaseException) -> BaseException | None:
        """Chain the driver's exception only when its text is free of the password."""
        secret = self._settings.secret
        return None if secret and secret in str(exc) else exc

    def _error(
        self, action: str, exc: BaseException, *, gave_up: float | None = None
    ) -> StorageError:
        head = f"{self._where}: could not {action}: {self._describe(exc)}"
        return StorageError(f"{head}. {advice(exc, self._settings.schema, gave_up)}")


async def _keep_session(conn: object) -> None:
    """Pool connections keep no session state, so releasing one needs no query.

    asyncpg still rolls back a transaction left open (a cancelled call); its
    default reset would add a round trip to every call.
    """


async def _close(conn: Connection) -> None:
    try:
        with anyio.fail_after(_CLOSE_TIMEOUT):
            await conn.close()
    except Exception:
        conn.terminate()


async def _close_pool(pool: Pool) -> None:
    """Close gracefully, or drop the sockets if the server does not answer."""
    try:
        with anyio.fail_after(_CLOSE_TIMEOUT):
            await pool.close()
    except Exception:
        pool.terminate()
