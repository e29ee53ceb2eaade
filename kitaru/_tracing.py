"""OpenTelemetry spans for runs, checkpoints, LLM calls and waits (API only, no SDK).

Spans nest as the code does: a run activation (``kitaru.run``) contains the
checkpoints (``kitaru.checkpoint``), LLM calls and waits (``kitaru.wait``) it
makes live; an LLM call made inside a checkpoint body is that checkpoint's
child. Calls replayed from the journal make no span: they do no work. An LLM
call's span follows the GenAI semantic conventions (name ``"chat MODEL"``,
``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``) plus ``kitaru.llm.cost_usd``.

Nothing here costs anything until an application configures a tracer
provider: ``opentelemetry.trace`` is not even imported by kitaru until then
(whoever configures a provider has imported it), and while the global provider
is still the API's proxy, :func:`span` hands back a shared no-op context.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ("Attributes", "checkpoint_span", "run_span", "span", "wait_span")

#: Attribute values: str, bool, int or float (``None`` values are dropped).
Attributes = Mapping[str, Any]

_NOOP: AbstractContextManager[None] = nullcontext()
#: A provider named by the environment (read once: this check runs on every
#: checkpoint, and reading the environment costs more than the rest of it).
_ENV_PROVIDER = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))
_cached: tuple[object, Tracer] | None = None


def _tracer() -> Tracer | None:
    global _cached
    # Whoever configured a provider imported the API; a provider named by the
    # environment is loaded by the API on first use.
    if "opentelemetry.trace" not in sys.modules and not _ENV_PROVIDER:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None  # no provider configured: every span would be a no-op
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer: Tracer = provider.get_tracer("kitaru", __version__)
    _cached = (provider, tracer)
    return tracer


def span(name: str, attributes: Attributes) -> AbstractContextManager[Span | None]:
    """A span around a block, current while it runs; ``None`` when tracing is off.

    Exceptions leaving the block mark the span as failed; ``BaseException``
    (cancellation, eviction) does not: the work was interrupted, not wrong.
    """
    tracer = _tracer()
    if tracer is None:
        return _NOOP
    return _active(tracer, name, attributes)


@contextmanager
def _active(tracer: Tracer, name: str, attributes: Attributes) -> Iterator[Span]:
    clean: dict[str, Any] = {k: v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(name, attributes=clean) as current:
        yield current


def run_span(run_id: str, flow: str, replaying: int) -> AbstractContextManager[Span | None]:
    """The span of one activation of a run (``replaying``: journal entries it starts with)."""
    if _tracer() is None:
        return _NOOP
    return span(
        "kitaru.run",
        {"kitaru.run_id": run_id, "kitaru.flow": flow, "kitaru.replayed_entries": replaying},
    )


def checkpoint_span(name: str, run_id: str, position: int) -> AbstractContextManager[Span | None]:
    """The span of one attempt of a checkpoint body (nothing is built when tracing is off)."""
    if _tracer() is None:
        return _NOOP
    return span(
        "kitaru.checkpoint",
        {"kitaru.checkpoint.name": name, "kitaru.run_id": run_id, "kitaru.position": position},
    )


def wait_span(
    run_id: str, position: int, topic: str, recorded: bool
) -> AbstractContextManager[Span | None]:
    """The span of a live wait (none for a wait replayed from the journal)."""
    if recorded or _tracer() is None:
        return _NOOP
    return span(
        "kitaru.wait", {"kitaru.run_id": run_id, "kitaru.position": position, "kitaru.topic": topic}
    )
