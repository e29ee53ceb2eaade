"""The durable core of LLM calls, shared by ``kitaru.llm`` and the PydanticAI adapter.

:func:`journaled` makes one live call the ``llm`` journal entry at a position
(or replays it): the recorded value is returned, a recorded failure raised
again, an entry ``rt.retry`` marked runs again; a live call is checked against
the run's budget, runs with retries of transient provider errors
(:func:`call_with_retries`), and commits its value, its usage (added to the
run in the same transaction) and the errors of its attempts. Inside a
checkpoint body, :func:`live_in_checkpoint` runs the call and sums its usage
into the checkpoint's instead.

Errors are scrubbed of secrets (parameter values such as ``api_key``, and the
values of secret-looking environment variables) before anyone sees them.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from .._errors import BudgetExceeded
from .._tracing import Attributes, span
from .._types import Backoff
from ..journal._budget import CallUsage, add_to_metadata, check_budget, usage_patch
from ..journal._failures import RETRY, describe_error, error_record, rebuild_error, retry_history
from ..storage.serde import Codec, loads_plain

if TYPE_CHECKING:
    from .._config import RuntimeConfig
    from ..journal._context import CheckpointFrame
    from ..journal._execution import Execution

__all__ = (
    "AttemptLog",
    "Live",
    "backoff_of",
    "call_with_retries",
    "is_transient",
    "journaled",
    "live_in_checkpoint",
    "live_outside",
    "scrub",
    "scrub_exception",
    "secrets_of",
)

T = TypeVar("T")


@dataclass(slots=True)
class AttemptLog:
    """What the attempts of one call did: usage, errors, provider calls, span attributes."""

    usage: CallUsage = field(default_factory=CallUsage)
    errors: list[str] = field(default_factory=list)
    #: Provider calls made (attempts), failed ones included.
    calls: int = 0
    attributes: dict[str, str | bool | int | float | None] = field(default_factory=dict)


#: A live call: fills the log, returns (the value a replay returns, its JSON).
Live = Callable[[AttemptLog], Awaitable[tuple[Any, bytes]]]


async def journaled(
    execution: Execution,
    position: int,
    name: str,
    *,
    codec: Codec,
    live: Live,
    span_name: str,
    span_attributes: Attributes,
) -> Any:
    """Run ``live`` as the ``llm`` journal entry at ``position``, or replay it.

    A recorded answer is decoded with ``codec``; a recorded failure is raised
    again; an entry ``rt.retry`` marked runs again, keeping its history. A live
    call is refused when the run's budget is spent (the refusal is recorded),
    else runs, and its value, usage and errors are committed with the usage
    added to the run.
    """
    entry = execution.recorded(position, name, "llm")
    prior = 0
    errors: list[str] = []
    if entry is not None:
        if entry.status == "completed":
            return await execution.load(
                entry,
                codec,
                lambda: f"LLM call {name!r} (run {execution.run_id}, position {position})",
            )
        if entry.status != RETRY:
            raise _rebuild(name, entry.error)
        prior, errors = retry_history(entry)
    started = time.time()
    log = AttemptLog(errors=errors)
    try:
        await check_budget(execution)
    except BudgetExceeded as exc:
        await _commit_failure(execution, position, name, started, prior, log, exc)
        raise
    try:
        with span(span_name, span_attributes) as current:
            execution.busy += 1
            try:
                result, data = await live(log)
            finally:
                execution.busy -= 1
                if current is not None:
                    current.set_attributes(_usage_attributes(log))
    except Exception as exc:
        # Like a checkpoint body's: whatever the call raised is its recorded outcome.
        await _commit_failure(execution, position, name, started, prior, log, exc)
        raise
    value, ref = await execution.store_value(data)
    metadata: dict[str, Any] = {"usage": log.usage.metadata()}
    if log.errors:
        metadata["errors"] = log.errors
    await execution.commit(
        execution.entry(
            position,
            name,
            "llm",
            started_at=started,
            attempts=prior + log.calls,
            value=value,
            ref=ref,
            metadata=metadata,
        ),
        usage_patch(execution.run_id, log.usage),
    )
    return result


async def _commit_failure(
    execution: Execution,
    position: int,
    name: str,
    started: float,
    prior: int,
    log: AttemptLog,
    exc: BaseException,
) -> None:
    description = describe_error(exc)
    if not log.errors or log.errors[-1] != description:
        log.errors.append(description)
    metadata: dict[str, Any] = {"errors": log.errors}
    if log.calls:
        metadata["usage"] = log.usage.metadata()
    record = error_record(exc, log.errors)
    if type(exc).__module__.startswith("litellm"):
        # litellm's exceptions take keyword arguments: keep them, so a replay
        # raises the very same class (a flow may catch litellm.RateLimitError).
        record["litellm"] = {
            "message": getattr(exc, "message", str(exc)),
            "llm_provider": getattr(exc, "llm_provider", None),
            "model": getattr(exc, "model", None),
            "status_code": getattr(exc, "status_code", None),
        }
    await execution.commit(
        execution.entry(
            position,
            name,
            "llm",
            started_at=started,
            attempts=prior + log.calls,
            error=record,
            metadata=metadata,
        ),
        usage_patch(execution.run_id, log.usage) if log.calls else None,
    )


def _rebuild(name: str, data: bytes | None) -> Exception:
    """The recorded failure of an LLM call, as the same exception class when possible."""
    record = loads_plain(data) or {}
    saved = record.get("litellm")
    type_name = str(record.get("type", ""))
    module_name, _, qualname = type_name.rpartition(".")
    if isinstance(saved, dict) and module_name.startswith("litellm"):
        try:
            cls = getattr(importlib.import_module(module_name), qualname)
            kwargs = {
                "message": saved["message"],
                "llm_provider": saved.get("llm_provider"),
                "model": saved.get("model"),
            }
            try:
                exc = cls(**kwargs)
            except TypeError:  # a class that insists on the HTTP response
                import httpx

                request = httpx.Request("POST", "http://replayed.invalid")
                status = int(saved.get("status_code") or 500)
                exc = cls(**kwargs, response=httpx.Response(status, request=request))
            exc.message = saved["message"]  # its __init__ prefixed it once more
            exc.args = (saved["message"],)
            if isinstance(exc, Exception):
                return exc
        except Exception:
            pass
    return rebuild_error(name, data)


async def live_in_checkpoint(
    frame: CheckpointFrame, live: Live, span_name: str, span_attributes: Attributes
) -> Any:
    """Run a call inside a checkpoint body; its usage is summed into the checkpoint's."""
    await check_budget(frame.execution, frame.metadata.get("usage"))
    log = AttemptLog()
    try:
        with span(span_name, span_attributes) as current:
            try:
                result, _ = await live(log)
            finally:
                if current is not None:
                    current.set_attributes(_usage_attributes(log))
    finally:
        if log.calls:
            add_to_metadata(frame.metadata, log.usage)
    return result


async def live_outside(live: Live, span_name: str, span_attributes: Attributes) -> Any:
    """Run a call outside any flow: nothing is recorded and no budget applies."""
    log = AttemptLog()
    with span(span_name, span_attributes) as current:
        try:
            result, _ = await live(log)
        finally:
            if current is not None:
                current.set_attributes(_usage_attributes(log))
    return result


def _usage_attributes(log: AttemptLog) -> dict[str, Any]:
    usage = log.usage
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "kitaru.llm.attempts": log.calls,
    }
    if usage.cost_usd is not None:
        attributes["kitaru.llm.cost_usd"] = usage.cost_usd
    attributes.update({k: v for k, v in log.attributes.items() if v is not None})
    return attributes


# -- retries ---------------------------------------------------------------------------------

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


# -- secrets ---------------------------------------------------------------------------------

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
