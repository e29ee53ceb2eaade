"""Secrets kept out of errors: parameter values such as ``api_key`` and secret environment values.

An LLM call's errors are scrubbed before anyone sees them (the caller, the
journal, a span): the values of secret-looking parameters and of
secret-looking environment variables become ``***``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ("scrub", "scrub_exception", "secrets_of")

_SECRET_KEY = re.compile(r"key|secret|token|password|credential|authorization", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(API_KEY|SECRET|TOKEN|PASSWORD|CREDENTIALS?)(_|$)", re.IGNORECASE)
#: Shorter values are not scrubbed (they would mangle ordinary words).
_MIN_SECRET = 8


def secrets_of(params: Mapping[str, Any]) -> list[str]:
    """Secret-looking parameter values (API keys, tokens, auth headers)."""
    found: list[str] = []
    for key, value in params.items():
        if isinstance(value, Mapping) and key in ("extra_headers", "headers"):
            found.extend(secrets_of(value))
        elif isinstance(value, str) and _SECRET_KEY.search(key):
            found.append(value)
            if value.lower().startswith("bearer "):
                found.append(value[7:])
    return [s for s in found if len(s) >= _MIN_SECRET]


def _env_secrets() -> list[str]:
    return [
        value
        for name, value in os.environ.items()
        if len(value) >= _MIN_SECRET and _SECRET_ENV.search(name)
    ]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def scrub_exception(exc: BaseException, secrets: Iterable[str] = ()) -> None:
    """Remove secrets from ``exc`` and its causes in place (their arguments and messages)."""
    every = sorted({*secrets, *_env_secrets()}, key=len, reverse=True)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(scrub(a, every) if isinstance(a, str) else a for a in current.args)
        message = getattr(current, "message", None)
        if isinstance(message, str):
            try:
                current.message = scrub(message, every)  # type: ignore[attr-defined]
            except AttributeError:
                pass
        current = current.__cause__ or current.__context__
