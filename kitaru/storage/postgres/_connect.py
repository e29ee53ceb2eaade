"""How a PostgreSQL store reaches its server: connections, the pool, and retried faults.

A :class:`Connector` belongs to one store. Every call of the store runs
through :meth:`Connector.call`, which retries connection faults by the rules
in the "Connection faults" section of :mod:`kitaru.storage.postgres`, and
turns any other driver error into :class:`kitaru.StorageError` with the
password scrubbed. It also opens the connections that live outside the pool
(migrations, the listener, the group-commit leaders).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from kitaru._errors import ConfigurationError, StorageError

# The module, not its function: the migrations import this package's _url,
# so either side may be imported first.
from .._migrations import postgres as migrations
from .._url import redact
from ._faults import Attempt, advice, discard, fault, is_driver_error

if TYPE_CHECKING:
    from asyncpg import Pool

    from ._ops import Connection
    from ._url import PgSettings

__all__ = ("Connector", "Op", "close", "close_pool", "driver")

T = TypeVar("T")
#: A store operation: runs on a connection; ``True`` when an earlier attempt may have committed.
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


def driver() -> Any:
    """The asyncpg module, imported on first use."""
    try:
        import asyncpg
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "the PostgreSQL run store needs asyncpg, which is not installed; pip install asyncpg"
        ) from exc
    return asyncpg


class Connector:
    """Connects one store to its server and runs its calls, retrying connection faults.

    Args:
        url: the store's URL (shown redacted in messages).
        settings: what :func:`~kitaru.storage.postgres._url.parse_url` read from it.
        check_closed: raises when the store was closed; called between retries.
    """

    def __init__(self, url: str, settings: PgSettings, check_closed: Callable[[], None]) -> None:
        self.settings = settings
        #: How messages name the store: URL redacted, password scrubbed.
        self.where = self.scrub(f"PostgreSQL store {redact(url)}")
        self._check_closed = check_closed
        self._warned = 0.0
        #: Whether the server keeps statement_timeout for the group-commit
        #: connections (``None``: not known yet; see connect_writer).
        self.server_timeout: bool | None = None

    # -- running calls ----------------------------------------------------------------

    async def call(
        self,
        acquire: Callable[[], AbstractAsyncContextManager[Connection]],
        action: str,
        op: Op[T],
        *,
        uncertain: bool = False,
    ) -> T:
        """Run ``op`` on a connection from ``acquire``, retrying connection faults.

        ``action`` ("read a run") names the call in messages; ``uncertain``
        starts as after a lost connection (an earlier try may have committed).
        """
        asyncpg = driver()

        async def attempt(state: Attempt) -> T:
            async with acquire() as conn:
                state.sent = True  # from here on, a lost connection leaves the outcome unknown
                try:
                    return await op(conn, state.uncertain)
                except Exception as exc:
                    discard(asyncpg, conn, exc)
                    raise

        return await self.retrying(action, attempt, uncertain=uncertain)

    async def retrying(
        self,
        action: str,
        attempt: Callable[[Attempt], Awaitable[T]],
        *,
        uncertain: bool = False,
    ) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or ``retry_for`` runs out."""
        asyncpg = driver()
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
                    raise self.error(action, exc) from self.cause(exc)
                if kind == "lost" and state.sent:
                    state.uncertain = True
                now = time.monotonic()
                if started is None:
                    started = now
                waited = now - started
                if waited + delay > self.settings.retry_for:
                    raise self.error(action, exc, gave_up=waited) from self.cause(exc)
                if now - self._warned >= _WARN_EVERY:
                    self._warned = now
                    log.warning(
                        "%s: %s while trying to %s (%s); retrying for up to %g s",
                        self.where,
                        "connection fault" if kind == "lost" else "transaction rolled back",
                        action,
                        self.describe(exc),
                        self.settings.retry_for,
                    )
            await anyio.sleep(delay)
            delay = min(max(delay * 2, _FIRST_RETRY), _MAX_RETRY)
            self._check_closed()

    # -- connections ------------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or migrate the schema (no retry: call it through :meth:`retrying`)."""
        # A connection of its own: the migration lock is a session lock, and
        # closing the connection releases it whatever happened.
        conn = await self.connect("migrations")
        try:
            await migrations.migrate(conn, self.settings.schema, self.where)
        finally:
            with anyio.CancelScope(shield=True):
                await close(conn)

    async def create_pool(self) -> Pool:
        """The store's connection pool (no retry: call it through :meth:`retrying`)."""
        settings = self.settings
        pool: Pool = await driver().create_pool(
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

    async def connect(self, role: str) -> Connection:
        """A connection outside the pool (``role`` is added to its application name)."""
        settings = self.settings
        conn: Connection = await driver().connect(
            settings.dsn,
            timeout=settings.connect_timeout,
            command_timeout=settings.command_timeout,
            statement_cache_size=0,
            server_settings={"application_name": f"{settings.application_name} {role}"},
        )
        return conn

    async def connect_listener(self) -> Connection:
        """The LISTEN connection's."""
        return await self.connect("listener")

    @property
    def writer_silence(self) -> float | None:
        """How long a group-commit connection may wait for an answer before it is dropped."""
        limit = self.settings.command_timeout
        return None if limit is None else limit + min(limit, _SILENCE_GRACE)

    async def connect_writer(self) -> Connection:
        """A group-commit leader's connection: the server keeps its statement timeout.

        See :class:`kitaru.storage.postgres._batch.WriteBatcher` for why not asyncpg.
        A pooler in between (PgBouncer) may refuse the startup parameter, or
        accept and drop it; either way the connection then gets asyncpg's
        ``command_timeout`` like the pool's, found out once per store.
        """
        settings = self.settings
        limit = settings.command_timeout
        asyncpg = driver()

        async def connect(command_timeout: float | None, **extra: str) -> Connection:
            conn: Connection = await asyncpg.connect(
                settings.dsn,
                timeout=settings.connect_timeout,
                command_timeout=command_timeout,
                statement_cache_size=settings.statement_cache_size,
                server_settings={"application_name": settings.application_name, **extra},
            )
            return conn

        if limit is None or self.server_timeout is False:
            return await connect(limit)
        ms = str(max(1, math.ceil(limit * 1000)))
        try:
            conn = await connect(None, statement_timeout=ms)
        except asyncpg.ProtocolViolationError as exc:
            if "startup parameter" not in str(exc):
                raise
            self._no_server_timeout(self.describe(exc))
            return await connect(limit)
        if self.server_timeout:
            return conn
        try:
            held = await conn.fetchval(_SHOW_TIMEOUT, timeout=settings.connect_timeout)
        except BaseException:
            conn.terminate()
            raise
        if held == ms:
            self.server_timeout = True
            return conn
        await close(conn)
        self._no_server_timeout(f"the server reports statement_timeout={held} ms")
        return await connect(limit)

    def _no_server_timeout(self, why: str) -> None:
        self.server_timeout = False
        log.info(
            "%s: the server does not keep statement_timeout for the group-commit connections "
            "(%s; a pooler in between?); they use asyncpg's command_timeout instead",
            self.where,
            why,
        )

    # -- messages ---------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with the URL's password masked."""
        secret = self.settings.secret
        return text.replace(secret, "***") if secret else text

    def describe(self, exc: BaseException) -> str:
        """``Type: message`` of a driver exception, safe to log."""
        text = str(exc)
        return self.scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def cause(self, exc: BaseException) -> BaseException | None:
        """Chain the driver's exception only when its text is free of the password."""
        secret = self.settings.secret
        return None if secret and secret in str(exc) else exc

    def error(
        self, action: str, exc: BaseException, *, gave_up: float | None = None
    ) -> StorageError:
        """The :class:`StorageError` for a failed ``action``: what happened and what to do."""
        head = f"{self.where}: could not {action}: {self.describe(exc)}"
        return StorageError(f"{head}. {advice(exc, self.settings.schema, gave_up)}")


async def _keep_session(conn: object) -> None:
    """Pool connections keep no session state, so releasing one needs no query.

    asyncpg still rolls back a transaction left open (a cancelled call); its
    default reset would add a round trip to every call.
    """


async def close(conn: Connection) -> None:
    """Close ``conn`` gracefully, or drop its socket if the server does not answer."""
    try:
        with anyio.fail_after(_CLOSE_TIMEOUT):
            await conn.close()
    except Exception:
        conn.terminate()


async def close_pool(pool: Pool) -> None:
    """Close gracefully, or drop the sockets if the server does not answer."""
    try:
        with anyio.fail_after(_CLOSE_TIMEOUT):
            await pool.close()
    except Exception:
        pool.terminate()
