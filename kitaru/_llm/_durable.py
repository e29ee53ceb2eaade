"""The durable core of LLM calls, shared by ``kitaru.llm`` and the PydanticAI adapter.

:func:`journaled` makes one live call the ``llm`` journal entry at a position,
through the journal's one durable-call routine
(:func:`kitaru.journal._durable.durable`): the recorded value is returned, a
recorded failure raised again (as litellm's own exception class when it was
one), an entry ``rt.retry`` marked runs again; a live call is checked against
the run's budget, runs with retries of transient provider errors
(:func:`kitaru._llm._retries.call_with_retries`), and commits its value, its
usage (added to the run in the same transaction) and the errors of its
attempts. Inside a checkpoint body, :func:`live_in_checkpoint` runs the call
and sums its usage into the checkpoint's instead; outside a flow,
:func:`live_outside` just runs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import BudgetExceeded
from .._tracing import Attributes, span
from ..journal._budget import CallUsage, add_to_metadata, check_budget
from ..journal._durable import Call, durable
from ..journal._failures import rebuild_error
from ..storage.serde import loads_plain

if TYPE_CHECKING:
    from ..journal._context import CheckpointFrame
    from ..journal._execution import Execution
    from ..storage.base import JournalEntry
    from ..storage.serde import Codec

__all__ = ("AttemptLog", "Live", "journaled", "live_in_checkpoint", "live_outside")


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

    async def run(call: Call) -> Any:
        call.failure_details = _litellm_details
        log = AttemptLog(errors=call.errors)
        call.tries = 0  # the entry counts provider calls: a refused call made none
        # The budget's refusal is recorded (a replay raises it again); a store
        # error while checking the budget is not.
        call.records_failures = False
        try:
            await check_budget(execution)
        except BudgetExceeded as exc:
            await call.fail(exc)
            raise
        # From here, whatever the call raises is its recorded outcome, like a
        # checkpoint body's.
        call.records_failures = True
        try:
            with span(span_name, span_attributes) as current:
                execution.busy += 1
                try:
                    result, data = await live(log)
                finally:
                    execution.busy -= 1
                    if current is not None:
                        current.set_attributes(_usage_attributes(log))
        except Exception:
            call.tries = log.calls
            call.metadata["errors"] = call.errors  # a failure's metadata lists them first
            if log.calls:
                call.metadata["usage"] = log.usage.metadata()
            raise
        call.tries = log.calls
        call.metadata["usage"] = log.usage.metadata()
        call.data = data
        return result

    return await durable(
        execution,
        position,
        name,
        "llm",
        run,
        codec=codec,
        recorded_failure=_recorded_failure,
        records_failures=True,
        label=f"LLM call {name!r}",
    )


def _litellm_details(exc: BaseException) -> dict[str, Any]:
    """The error record's ``"litellm"`` field: the keyword arguments of litellm's exceptions.

    Kept so that a replay raises the very same class (a flow may catch
    ``litellm.RateLimitError``).
    """
    if not type(exc).__module__.startswith("litellm"):
        return {}
    return {
        "litellm": {
            "message": getattr(exc, "message", str(exc)),
            "llm_provider": getattr(exc, "llm_provider", None),
            "model": getattr(exc, "model", None),
            "status_code": getattr(exc, "status_code", None),
        }
    }


def _recorded_failure(entry: JournalEntry) -> BaseException:
    """The recorded failure of an LLM call, as the same exception class when possible."""
    record = loads_plain(entry.error) or {}
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
    return rebuild_error(entry.name, entry.error)


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
