"""Settings carried by a PostgreSQL store URL.

kitaru reads its own query parameters and removes them before the rest of the
URL reaches asyncpg (asyncpg would send unknown parameters to the server as
settings, which the server refuses). Everything else (``sslmode``,
``password``, ``options``, ...) is passed through untouched.

==========================  =========  ================================================
parameter                   default    meaning
==========================  =========  ================================================
``schema``                  ``kitaru`` schema holding kitaru's tables (created if missing)
``pool_min``                ``1``      connections the pool keeps open
``pool_max``                ``10``     most connections the pool opens
``retry_for``               ``30``     seconds to keep retrying after a connection fault
``connect_timeout``         ``10``     seconds to wait for one connection attempt
``command_timeout``         ``60``     seconds a statement may run before it is abandoned
                                       and retried (``none``: no limit; a silently dead
                                       network would then hang a call for hours)
``statement_cache_size``    ``100``    prepared statements per connection (0 behind
                                       PgBouncer in transaction mode)
``listen``                  ``on``     keep a LISTEN connection for wake-ups (``off``
                                       falls back to polling, e.g. behind PgBouncer)
``application_name``        ``kitaru`` shown in ``pg_stat_activity``; the listener
                                       connection adds `` listener``
==========================  =========  ================================================
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode

from kitaru._errors import ConfigurationError

from .._url import redact, scheme_of

__all__ = ("PgSettings", "lock_key", "parse_url", "quote_ident")

T = TypeVar("T")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})
#: Identifiers and channel names are at most 63 bytes in PostgreSQL.
_NAME_MAX = 63
_COMMAND_TIMEOUT: float | None = 60.0
#: First half of every advisory lock key kitaru takes ("KTAR" as an integer).
LOCK_CLASS = 0x4B544152


@dataclass(frozen=True, slots=True)
class PgSettings:
    """What a ``postgresql://`` URL asks for, with kitaru's parameters split off."""

    #: The URL asyncpg connects with: kitaru's parameters removed, scheme normalised.
    dsn: str = field(repr=False)
    schema: str = "kitaru"
    pool_min: int = 1
    pool_max: int = 10
    retry_for: float = 30.0
    connect_timeout: float = 10.0
    command_timeout: float | None = 60.0
    statement_cache_size: int = 100
    listen: bool = True
    application_name: str = "kitaru"
    #: The password in the URL, if any: scrubbed from driver messages.
    secret: str | None = field(default=None, repr=False)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema."""
        name = f"kitaru_{self.schema}"
        if len(name.encode()) > _NAME_MAX:
            name = f"kitaru_{zlib.crc32(self.schema.encode()):08x}"
        return name


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lock_key(schema: str, purpose: str) -> tuple[int, int]:
    """The two-integer advisory lock key kitaru uses for ``purpose`` in ``schema``."""
    crc = zlib.crc32(f"{purpose}:{schema}".encode())
    return LOCK_CLASS, crc - (1 << 32) if crc >= 1 << 31 else crc


def parse_url(url: str) -> PgSettings:
    """Split ``url`` into asyncpg's DSN and kitaru's settings.

    Raises:
        ConfigurationError: the scheme is not PostgreSQL's or a kitaru
            parameter has an invalid value (the message shows the URL redacted).
    """
    scheme = scheme_of(url)
    dialect, _, driver = scheme.partition("+")
    if dialect not in ("postgresql", "postgres") or driver not in ("", "asyncpg"):
        raise ConfigurationError(
            f"{redact(url)!r} is not a PostgreSQL URL; use 'postgresql://user@host:5432/db'"
        )
    rest = url.partition("://")[2]
    rest, _, _fragment = rest.partition("#")
    base, _, query = rest.partition("?")
    ours: dict[str, str] = {}
    passed: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _OURS:
            ours[key] = value
        else:
            passed.append((key, value))

    def get(key: str, parse: Callable[[str], T], default: T) -> T:
        if key not in ours:
            return default
        try:
            return parse(ours[key])
        except ValueError as exc:
            raise ConfigurationError(
                f"{redact(url)!r}: invalid {key}={ours[key]!r} ({exc}); see the parameters "
                "documented in kitaru.storage.postgres"
            ) from None

    pool_min = get("pool_min", _count, 1)
    pool_max = get("pool_max", _count, 10)
    if pool_max < 1 or pool_min > pool_max:
        raise ConfigurationError(
            f"{redact(url)!r}: pool_min={pool_min} and pool_max={pool_max} must satisfy "
            "pool_min <= pool_max and pool_max >= 1"
        )
    dsn = f"postgresql://{base}"
    if passed:
        dsn += "?" + urlencode(passed)
    return PgSettings(
        dsn=dsn,
        schema=get("schema", _schema, "kitaru"),
        pool_min=pool_min,
        pool_max=pool_max,
        retry_for=get("retry_for", _seconds, 30.0),
        connect_timeout=get("connect_timeout", _seconds, 10.0),
        command_timeout=get("command_timeout", _optional_seconds, _COMMAND_TIMEOUT),
        statement_cache_size=get("statement_cache_size", _count, 100),
        listen=get("listen", _flag, True),
        application_name=get("application_name", _name, "kitaru"),
        secret=_password(base, passed),
    )


def _password(base: str, passed: list[tuple[str, str]]) -> str | None:
    authority = base.partition("/")[0]
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        return unquote(userinfo.partition(":")[2]) or None
    for key, value in passed:
        if key.lower() == "password" and value:
            return value
    return None


def _schema(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError("use letters, digits and underscores, starting with a letter or _")
    return value


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses NaN
        raise ValueError("must be a number of seconds >= 0")
    return number


def _optional_seconds(value: str) -> float | None:
    return None if value.lower() in ("", "none") else _seconds(value)


def _flag(value: str) -> bool:
    text = value.lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("use on or off")


def _name(value: str) -> str:
    if len(value.encode()) > _NAME_MAX - len(" listener"):
        raise ValueError("at most 54 bytes")
    return value


#: kitaru's own query parameters (documented in the module docstring).
_OURS = frozenset(
    {
        "schema",
        "pool_min",
        "pool_max",
        "retry_for",
        "connect_timeout",
        "command_timeout",
        "statement_cache_size",
        "listen",
        "application_name",
    }
)
