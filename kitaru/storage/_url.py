"""Store URL helpers: find the scheme, and hide passwords before a URL is shown.

Every message that names a store URL goes through :func:`redact`, so a
password never reaches a log line or a traceback.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

from kitaru._errors import ConfigurationError

__all__ = ("redact", "scheme_of")

_MASK = "***"
# RFC 3986 scheme: a letter, then letters, digits, "+", "-" or ".".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "secret", "token", "key"})


def _is_secret(name: str) -> bool:
    """Query parameters that carry credentials (``password``, ``secret_key``, ``token``...)."""
    lowered = name.lower()
    return (
        lowered in _SECRET_PARAMS
        or lowered.endswith(("_key", "_secret", "_token", "_password"))
        or "secret" in lowered
    )


def scheme_of(url: str) -> str:
    """Return the lower-cased scheme of ``url`` (``"sqlite"`` for ``sqlite:///x.db``).

    Raises:
        ConfigurationError: ``url`` has no ``scheme://`` prefix.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME.match(scheme):
        raise ConfigurationError(
            f"{redact(url)!r} is not a store URL: expected 'scheme://…', "
            "for example 'sqlite:///kitaru.db' or 'memory://'"
        )
    return scheme.lower()


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Both the user-info form (``postgresql://user:secret@host/db``) and
    credential query parameters (``password=``, ``secret=``, ``token=``,
    ``key=``, ``*_key=``...) are masked; anything else is left as is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The authority ends at the first "/", "?" or "#"; the last "@" in it ends
    # the user info (an unencoded "@" in a password stays masked too).
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        if colon:
            authority = f"{user}:{_MASK}@{host}"
    return f"{scheme}{sep}{authority}{_redact_query(tail)}"


def _redact_query(tail: str) -> str:
    path, qmark, rest = tail.partition("?")
    if not qmark:
        return tail
    query, hash_, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_is_secret(key) for key, _ in pairs):
        return tail
    masked = [(k, _MASK if _is_secret(k) else v) for k, v in pairs]
    return f"{path}?{urlencode(masked, safe='*')}{hash_}{fragment}"
