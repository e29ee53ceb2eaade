"""The artifact store URL: its protocols, the fsspec options in its query, and how it is shown.

Options of a remote filesystem go in the URL's query (``?endpoint_url=...``);
credentials never do, since URLs end up in configuration and log lines.
Every message that names an artifact store URL goes through :func:`shown`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from kitaru._errors import ConfigurationError

from .._url import redact

__all__ = ("protocols", "safe_protocols", "scrub", "shown", "split_options")


_MASK = "***"
# Protocols whose URL query is not ours to read: a path or a real HTTP query.
_NO_OPTIONS = frozenset({"file", "local", "memory", "http", "https"})
# Options kitaru sets itself.
_RESERVED_OPTIONS = frozenset({"asynchronous", "loop", "skip_instance_cache"})
# Option names that would put a credential in the URL.
_SECRET_OPTION = re.compile(
    r"secret|token|passw|pwd|credential|signature|sas|(?:^|_)key(?:$|_)", re.IGNORECASE
)
# Options that a protocol's filesystem passes to its client (``client_kwargs``).
_CLIENT_OPTIONS = {"s3": frozenset({"region_name"}), "s3a": frozenset({"region_name"})}
_INTEGER = re.compile(r"^-?[0-9]+$")
# ``scheme://user:password@`` inside free text (a driver's error message).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


def protocols(url: str) -> list[str]:
    from fsspec.core import split_protocol  # type: ignore[import-untyped]

    return [split_protocol(part)[0] or "file" for part in url.split("::")]


def safe_protocols(url: str) -> list[str]:
    try:
        return protocols(url)
    except Exception:
        return []


def split_options(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``scheme://path?name=value&…`` into the filesystem URL and its options.

    Raises:
        ConfigurationError: the query is malformed, repeats an option, sets one
            that kitaru sets itself, or carries a credential.
    """
    head, chain, last = url.rpartition("::")
    scheme, sep, _ = last.partition("://")
    path, qmark, query = last.partition("?")
    if not sep or not qmark or scheme.lower() in _NO_OPTIONS:
        return url, {}
    protocol = scheme.lower()
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise ConfigurationError(
            f"artifact store {shown(url)} has a malformed query ({exc}): "
            "write options as '?name=value&name=value'"
        ) from None
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for name, text in pairs:
        if name in options or name in client:
            raise ConfigurationError(f"artifact store {shown(url)} sets option {name!r} twice")
        if name in _RESERVED_OPTIONS:
            raise ConfigurationError(
                f"artifact store {shown(url)} sets option {name!r}, which kitaru sets itself; "
                "remove it from the URL"
            )
        value = _option_value(url, name, text)
        secret = _secret_name(name, value)
        if secret is not None:
            raise ConfigurationError(
                f"artifact store {shown(url)} carries a credential in option {secret!r}: "
                "URLs end up in configuration and log lines, so kitaru takes no credentials "
                "from them. Remove it and give credentials through the environment "
                "(for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), "
                "a credentials file or an instance role"
            )
        if name in _CLIENT_OPTIONS.get(protocol, ()):
            client[name] = value
        else:
            options[name] = value
    if client:
        given = options.get("client_kwargs", {})
        if not isinstance(given, dict):
            raise ConfigurationError(
                f"artifact store {shown(url)}: option 'client_kwargs' must be a JSON object"
            )
        options["client_kwargs"] = {**given, **client}
    return f"{head}{chain}{path}", options


def _option_value(url: str, name: str, text: str) -> Any:
    """Decode booleans, integers and JSON objects or lists; keep anything else as text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INTEGER.match(text):
        return int(text)
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(
                f"artifact store {shown(url)}: option {name!r} is not valid JSON ({exc})"
            ) from None
    return text


def _secret_name(name: str, value: Any) -> str | None:
    """The name of a credential in option ``name`` (or nested in its JSON value), if any."""
    if _SECRET_OPTION.search(name):
        return name
    if isinstance(value, dict):
        for key, item in value.items():
            found = _secret_name(str(key), item)
            if found is not None:
                return f"{name}.{found}"
    return None


def shown(url: str) -> str:
    """``url`` as it may appear in a message: passwords and credential options masked.

    Beyond :func:`~kitaru.storage._url.redact`, options named like a
    credential are masked, and so are passwords in options that are URLs
    (an ``endpoint_url`` with user info).
    """
    head, chain, last = url.rpartition("::")
    path, qmark, query = last.partition("?")
    if not qmark:
        return redact(url)
    base = redact(f"{head}{chain}{path}")
    pairs = parse_qsl(query, keep_blank_values=True)
    masked = [
        (name, _MASK if _SECRET_OPTION.search(name) or _has_secret(text) else redact(text))
        for name, text in pairs
    ]
    if masked == pairs:
        return f"{base}?{query}"
    return f"{base}?{urlencode(masked, safe='*:/@')}"


def scrub(text: str) -> str:
    """Mask passwords of URLs quoted in ``text`` (drivers quote their endpoint)."""
    return _USERINFO.sub(rf"\1:{_MASK}@", text)


def _has_secret(text: str) -> bool:
    """Whether an option's text is a JSON object holding a credential."""
    if not text.startswith("{"):
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return _secret_name("", value) is not None
