"""How the PostgreSQL store classifies driver failures, and what it tells the user.

A failed attempt is retried only when that cannot write anything twice: see
the "Connection faults" section of :mod:`kitaru.storage.postgres`.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Literal

__all__ = ("Attempt", "advice", "discard", "fault", "is_driver_error")


class Attempt:
    """What the retry loop must know about the attempt that just failed."""

    __slots__ = ("sent", "uncertain")

    def __init__(self) -> None:
        #: A statement went out on a connection (its outcome is unknown if it broke).
        self.sent = False
        #: An earlier attempt of this call may have committed.
        self.uncertain = False


def fault(asyncpg: Any, exc: BaseException) -> Literal["lost", "rolled_back"] | None:
    """How a failed attempt may be retried: ``None`` means it may not."""
    if isinstance(exc, asyncpg.TransactionRollbackError):
        return "rolled_back"  # deadlock or serialization failure: nothing was committed
    if isinstance(exc, asyncpg.QueryCanceledError) and "statement timeout" in str(exc):
        # The server's statement_timeout (the group-commit connections' form
        # of command_timeout) rolled the statement back. A server whose
        # messages are not in English reports it in other words: then the
        # caller gets the error at once instead of a retry.
        return "rolled_back"
    if isinstance(
        exc,
        (
            OSError,  # refused, reset, unreachable; TimeoutError too
            asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError
            asyncpg.CannotConnectNowError,  # starting up or shutting down
            asyncpg.AdminShutdownError,  # pg_terminate_backend, smart/fast shutdown
            asyncpg.CrashShutdownError,
            asyncpg.TooManyConnectionsError,
        ),
    ):
        return "lost"
    text = str(exc)
    if isinstance(exc, asyncpg.InterfaceError) and "connection" in text and "closed" in text:
        return "lost"
    if isinstance(exc, asyncpg.InternalClientError) and "cannot switch to state" in text:
        # The server's FATAL reached an idle pooled connection just before we
        # used it: the protocol is still consuming the error of a dying socket.
        return "lost"
    return None


def discard(asyncpg: Any, conn: Any, exc: BaseException) -> None:
    """Close ``conn`` after ``exc`` when it must not be used again.

    A lost connection must not be reused, nor go back to the pool (a closed
    one was already handed back by asyncpg). asyncpg's own
    ``command_timeout`` is the exception: asyncpg has asked the server to
    cancel the statement, and the connection's next use waits for that.
    Closing it would abandon the cancel request, and the statement, still
    waiting on the server (for a lock, say), could commit after the call's
    retry: the write would be applied twice.
    """
    if fault(asyncpg, exc) == "lost" and not isinstance(exc, TimeoutError):
        with suppress(asyncpg.InterfaceError):
            conn.terminate()


def is_driver_error(asyncpg: Any, exc: BaseException) -> bool:
    """Whether ``exc`` comes from asyncpg or the network (and must be wrapped)."""
    return isinstance(
        exc, (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
    )


def advice(exc: BaseException, schema: str, gave_up: float | None) -> str:
    """What to do about ``exc``: one sentence for the end of a StorageError message."""
    code = getattr(exc, "sqlstate", None) or ""
    if gave_up is not None and code == "57014":
        return (
            f"Its statement kept running past command_timeout for {gave_up:.1f} s; look for "
            "a lock held elsewhere (pg_stat_activity), or raise ?command_timeout="
        )
    if gave_up is not None:
        return (
            f"The connection kept failing for {gave_up:.1f} s; check that the server is "
            "running and reachable (raise ?retry_for= to wait longer through restarts)"
        )
    if code in ("28P01", "28000"):
        return "Check the user name and password, and pg_hba.conf on the server"
    if code == "3D000":
        return "The database does not exist; create it (createdb NAME) or fix the URL"
    if code == "42501":
        return (
            f"The user lacks a privilege on schema {schema!r}; grant it, or choose a "
            "schema the user owns with ?schema=NAME"
        )
    if code in ("42P01", "3F000"):
        return "kitaru's tables are gone (was the schema dropped?); reopen the store"
    return "If it persists, check the server's log"
