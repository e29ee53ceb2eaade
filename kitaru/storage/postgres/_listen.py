"""The PostgreSQL store's wake-up signal: one LISTEN connection and a few counters.

Writers that make work for other processes send ``pg_notify`` in the same
transaction (PostgreSQL delivers it only if that transaction commits): ``m`` when
a message was posted, ``d`` when a suspended run with a deadline lost its
host, ``r`` when a run was left for any worker (``rt.submit``, a replay or
retry of a flow the sender does not host). The payload ends with the sending
store's origin id, so a store ignores its own notifications (its runtime
already knows).

asyncpg delivers notifications and connection loss as plain callbacks on the
event loop, so this needs no task of its own: the callbacks bump counters and
set an event, and whoever waits (the runtime's wake service) reconnects a lost
listener, with exponential backoff, from its own task. After every
(re)connection all counters move, because notifications sent while nobody
listened are gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from ._ops import Connection

__all__ = ("Listener",)

log = logging.getLogger("kitaru.storage.postgres")

_FIRST_DELAY = 0.05
_MAX_DELAY = 5.0
#: A listener idle this long is pinged (a silently dead network closes nothing).
_PING_AFTER = 30.0
_PING_TIMEOUT = 5.0


class Listener:
    """Counts the store's notifications from other processes; reconnects when lost.

    Args:
        connect: opens a new dedicated connection.
        channel: the channel to LISTEN on.
        origin: this store's id; notifications carrying it are ignored.
        where: the store, redacted, for log lines.
        describe: turns a driver exception into a log-safe line.
        enabled: ``False`` never connects; waiters then poll.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Connection]],
        channel: str,
        origin: str,
        where: str,
        describe: Callable[[BaseException], str],
        *,
        enabled: bool = True,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._origin = origin
        self._where = where
        self._describe = describe
        self._enabled = enabled
        #: Moves on every notification from another process and every reconnection.
        self.signals = 0
        #: Moves when another process handed a deadline over (and on reconnection).
        self.deadlines = 0
        #: Moves when another process left a run for any worker (and on reconnection).
        self.runnables = 0
        #: How many times the connection was (re)established.
        self.connects = 0
        self._conn: Connection | None = None
        self._event = anyio.Event()
        self._lock = anyio.Lock()
        self._next_attempt = 0.0
        self._delay = _FIRST_DELAY
        self._checked = 0.0
        self._closed = False

    @property
    def alive(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection (for diagnostics and tests)."""
        return self._conn.get_server_pid() if self.alive and self._conn is not None else None

    async def ensure(self) -> bool:
        """Connect if needed and allowed by the backoff; True when listening."""
        if self.alive:
            return True
        if not self._enabled or self._closed or time.monotonic() < self._next_attempt:
            return False
        async with self._lock:
            if self.alive:
                return True
            if self._closed or time.monotonic() < self._next_attempt:
                return False
            return await self._reconnect()

    async def wait(self, token: int, max_wait: float) -> int:
        """Return :attr:`signals` once it differs from ``token``, or after ``max_wait`` seconds.

        Without a listener (disabled, or down and waiting for its next
        reconnection attempt) it sleeps ``max_wait`` (or until that attempt)
        and reports a change, so the caller falls back to polling.
        """
        if self.signals != token:
            return self.signals
        if not await self.ensure():
            pause = max_wait
            if self._enabled and not self._closed:  # wake up for the next reconnection
                pause = min(pause, max(0.0, self._next_attempt - time.monotonic()))
            await anyio.sleep(pause)
            self.signals += 1
            return self.signals
        if self.signals != token:
            return self.signals
        # Events cannot be reset: replace a spent one. No await between this
        # check and the wait, so no notification can slip in unseen.
        if self._event.is_set():
            self._event = anyio.Event()
        with anyio.move_on_after(max_wait) as scope:
            await self._event.wait()
        if scope.cancelled_caught:
            await self._check()
        return self.signals

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.remove_termination_listener(self._terminated)
        try:
            with anyio.fail_after(_PING_TIMEOUT):
                await conn.close()
        except Exception:  # the server is gone or slow: drop the socket
            conn.terminate()

    def terminate(self) -> None:
        """Drop the connection at once (no I/O; for finalizers)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.remove_termination_listener(self._terminated)
            conn.terminate()

    # -- asyncpg callbacks (plain functions on the event loop, no task) -------------

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        kind, _, origin = str(payload).partition(":")
        if origin != self._origin:
            self._bump(kind)

    def _terminated(self, conn: object) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._next_attempt = 0.0  # first attempt at once, then back off
        if not self._closed:
            log.warning("%s: the LISTEN connection was closed; reconnecting", self._where)
        self._bump("*")  # wake the waiter so it reconnects

    def _bump(self, kind: str) -> None:
        """Count a notification of ``kind`` (``"*"``: any kind may have been missed)."""
        self.signals += 1
        if kind in ("d", "*"):
            self.deadlines += 1
        if kind in ("r", "*"):
            self.runnables += 1
        self._event.set()

    # -- plumbing ---------------------------------------------------------------------

    async def _reconnect(self) -> bool:
        conn: Connection | None = None
        try:
            # Shielded: asyncpg's handshake, cancelled half-way, leaves a future
            # whose "unexpected connection_lost()" nobody retrieves (asyncio
            # prints it at exit). The attempt is bounded by connect_timeout;
            # a cancellation takes effect once it has ended.
            with anyio.CancelScope(shield=True):
                conn = await self._connect()
                await conn.add_listener(self._channel, self._notified)
            if conn is None:  # pragma: no cover - the shielded block always sets it
                return False
            if self._closed:  # closed while connecting: nobody will close this one
                conn.terminate()
                return False
            await anyio.lowlevel.checkpoint()  # honour a cancellation that came meanwhile
        except BaseException as exc:
            if conn is not None:
                conn.terminate()  # never leave a half-set-up connection behind
            if not isinstance(exc, Exception):
                raise  # cancelled: the next waiter tries again
            # Any failure here (refused, reset, timed out, shutting down, auth)
            # is retried later: the store's own calls report persistent ones.
            self._next_attempt = time.monotonic() + self._delay
            log.warning(
                "%s: cannot LISTEN for wake-ups (%s); retrying in %.2f s, polling meanwhile",
                self._where,
                self._describe(exc),
                self._delay,
            )
            self._delay = min(self._delay * 2, _MAX_DELAY)
            return False
        conn.add_termination_listener(self._terminated)
        if self.connects:
            log.info("%s: LISTEN connection re-established", self._where)
        self.connects += 1
        self._conn = conn
        self._delay = _FIRST_DELAY
        self._checked = time.monotonic()
        self._bump("*")  # anything sent while nobody listened is lost
        return True

    async def _check(self) -> None:
        """Ping an idle listener now and then; a dead one is dropped and reconnected."""
        conn = self._conn
        if conn is None or time.monotonic() - self._checked < _PING_AFTER:
            return
        async with self._lock:
            self._checked = time.monotonic()
            try:
                with anyio.fail_after(_PING_TIMEOUT):
                    await conn.fetchval("SELECT 1")
            except Exception as exc:
                log.warning(
                    "%s: the LISTEN connection stopped answering (%s); reconnecting",
                    self._where,
                    self._describe(exc),
                )
                with suppress(Exception):
                    conn.terminate()  # calls _terminated, which schedules a reconnect
