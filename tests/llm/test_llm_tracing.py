"""OpenTelemetry spans: run > checkpoint > llm call, and waits; GenAI attributes; free when off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import kitaru
from kitaru import checkpoint, flow

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A global SDK tracer provider exporting to memory, for this test only."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        # The API lets a provider be set once per process; undo it (as its own tests do).
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


@checkpoint
async def research(topic: str) -> str:
    return await kitaru.llm(topic, model="gpt-4o-mini", mock_response="notes")


@flow
async def traced(topic: str) -> str:
    notes = await research(topic)
    summary = await kitaru.llm(notes, model="gpt-4o-mini", mock_response="summary")
    ok = await kitaru.wait(bool)
    return summary if ok else "no"


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_spans_nest_and_carry_genai_attributes(spans: InMemorySpanExporter) -> None:
    async with kitaru.runtime(store="memory://", artifacts="memory://traced") as rt:
        run = await rt.start(traced, "octopus")
        while (await run.info()).status != "waiting":
            await anyio.sleep(0.01)
        await rt.send(run.id, True)
        assert await run.result() == "summary"
    finished = spans.get_finished_spans()
    (root,) = by_name(finished, "kitaru.run")
    (cp,) = by_name(finished, "kitaru.checkpoint")
    inner, outer = sorted(by_name(finished, "chat gpt-4o-mini"), key=lambda s: s.start_time or 0)
    (wait,) = by_name(finished, "kitaru.wait")
    assert root.attributes is not None and root.attributes["kitaru.run_id"] == run.id
    assert root.attributes["kitaru.flow"] == "traced"
    assert cp.parent is not None and cp.parent.span_id == root.context.span_id
    assert cp.attributes is not None and cp.attributes["kitaru.checkpoint.name"] == "research"
    assert inner.parent is not None and inner.parent.span_id == cp.context.span_id
    assert outer.parent is not None and outer.parent.span_id == root.context.span_id
    assert wait.parent is not None and wait.parent.span_id == root.context.span_id
    assert wait.attributes is not None and wait.attributes["kitaru.topic"] == "input"
    for llm_span in (inner, outer):
        attributes = llm_span.attributes
        assert attributes is not None
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.system"] == "openai"
        assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert attributes["gen_ai.usage.input_tokens"] == 10
        assert attributes["gen_ai.usage.output_tokens"] == 20
        cost = attributes["kitaru.llm.cost_usd"]
        assert isinstance(cost, float) and cost > 0


async def test_replayed_calls_make_no_spans(spans: InMemorySpanExporter) -> None:
    async with kitaru.runtime(store="memory://", artifacts="memory://traced", idle_grace=0) as rt:
        run = await rt.start(traced, "octopus")
        while (info := await run.info()).status != "waiting" or info.owner is not None:
            await anyio.sleep(0.01)  # until evicted
        spans.clear()
        await rt.send(run.id, True)  # rehydrates: the checkpoint and calls replay
        assert await run.result() == "summary"
    # The checkpoint and both calls come from the journal; the wait consumes the message.
    names = sorted(s.name for s in spans.get_finished_spans())
    assert names == ["kitaru.run", "kitaru.wait"]
    (root,) = by_name(spans.get_finished_spans(), "kitaru.run")
    assert root.attributes is not None and root.attributes["kitaru.replayed_entries"] == 2


async def test_a_failing_llm_call_marks_its_span(spans: InMemorySpanExporter) -> None:
    with pytest.raises(Exception, match="mock internal server error"):
        await kitaru.llm(
            "q", model="gpt-4o-mini", mock_response="litellm.InternalServerError", retries=0
        )
    (failed,) = spans.get_finished_spans()
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["kitaru.llm.attempts"] == 1


def test_without_a_provider_opentelemetry_is_not_even_imported() -> None:
    code = (
        "import sys, anyio, kitaru\n"
        "@kitaru.checkpoint\n"
        "async def step() -> int:\n"
        "    return 1\n"
        "@kitaru.flow\n"
        "async def f() -> int:\n"
        "    return await step()\n"
        "async def main():\n"
        "    async with kitaru.runtime(store='memory://', artifacts='memory://x') as rt:\n"
        "        assert await (await rt.start(f)).result() == 1\n"
        "anyio.run(main)\n"
        "print('opentelemetry' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
