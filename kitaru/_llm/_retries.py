"""Retries of transient provider errors, shared by ``kitaru.llm`` and the PydanticAI adapter.

A rate limit, a timeout, a connection error or a 5xx is tried again with
exponential backoff (the runtime's ``llm_retries`` / ``llm_backoff``); an
authentication error, a bad request or a missing model never is.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

import anyio

from .._types import Backoff
from ..journal._failures import describe_error
from ._secrets import scrub_exception

if TYPE_CHECKING:
    from .._config import RuntimeConfig
    from ._durable import AttemptLog

__all__ = ("backoff_of", "call_with_retries", "is_transient")

T = TypeVar("T")

#: Error class names (anywhere in the MRO) that mean "try again later", across
#: litellm, the OpenAI and Anthropic SDKs and PydanticAI.
_TRANSIENT_NAMES = frozenset(
    {
        "RateLimitError",
        "Timeout",
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ServiceUnavailableError",
        "BadGatewayError",
        "OverloadedError",
    }
)
#: Error class names that never get better by retrying.
_PERMANENT_NAMES = frozenset(
    {
        "AuthenticationError",
        "BadRequestError",
        "NotFoundError",
        "PermissionDeniedError",
        "UnprocessableEntityError",
        "ContentPolicyViolationError",
        "ContextWindowExceededError",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for provider errors worth retrying: rate limits, timeouts, connection errors, 5xx."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _PERMANENT_NAMES:
        return False
    if names & _TRANSIENT_NAMES:
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in (408, 409, 429) or status >= 500
    return isinstance(exc, TimeoutError | ConnectionError)


async def call_with_retries(
    once: Callable[[], Awaitable[T]],
    log: AttemptLog,
    *,
    retries: int,
    backoff: Backoff,
    secrets: Iterable[str] = (),
) -> T:
    """Call ``once`` until it succeeds, retrying transient errors with backoff.

    Each attempt counts in ``log.calls`` and its time in ``log.usage.latency_s``;
    each failed attempt is listed in ``log.errors``. Errors are
    scrubbed of ``secrets`` (and of secret environment values) before anything
    sees them.
    """
    retried = 0
    while True:
        log.calls += 1
        began = time.perf_counter()
        try:
            return await once()
        except Exception as exc:
            scrub_exception(exc, secrets)
            log.errors.append(describe_error(exc))
            if retried >= retries or not is_transient(exc):
                raise
            retried += 1
        finally:
            log.usage.latency_s += time.perf_counter() - began
        await anyio.sleep(backoff.delay(retried))


def backoff_of(config: RuntimeConfig) -> Backoff:
    """The backoff policy of LLM retries under ``config``."""
    return Backoff(initial=config.llm_backoff, factor=2.0, max=30.0, jitter=0.1)
