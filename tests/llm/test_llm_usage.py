"""Tokens, cost and latency: on each llm entry, summed on checkpoints, totalled on the run."""

from __future__ import annotations

import pytest

import kitaru
from kitaru import checkpoint, flow
from tests.llm.conftest import Script

pytestmark = pytest.mark.anyio

#: What litellm's mock_response reports for any prompt.
MOCK_IN, MOCK_OUT = 10, 20


async def test_known_model_records_tokens_cost_and_latency(rt: kitaru.Runtime) -> None:
    @flow
    async def f() -> str:
        a = await kitaru.llm("q", model="gpt-4o-mini", mock_response="one")
        b = await kitaru.llm("q", model="gpt-4o-mini", mock_response="two")
        return a + b

    run = await rt.start(f)
    assert await run.result() == "onetwo"
    info = await run.info()
    usage = info.checkpoints[0].metadata["usage"]
    assert usage["input_tokens"] == MOCK_IN
    assert usage["output_tokens"] == MOCK_OUT
    assert usage["model"] == "gpt-4o-mini"
    assert usage["cost_usd"] > 0
    assert usage["latency_s"] >= 0
    assert info.usage.input_tokens == 2 * MOCK_IN
    assert info.usage.output_tokens == 2 * MOCK_OUT
    assert info.usage.cost_usd == pytest.approx(2 * usage["cost_usd"])


async def test_unknown_model_records_tokens_and_cost_unknown(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("x", "y")

    @flow
    async def f() -> None:
        await kitaru.llm("q", model="scripted/private-model")
        await kitaru.llm("q", model="scripted/private-model")

    run = await rt.start(f)
    await run.result()
    info = await run.info()
    assert info.checkpoints[0].metadata["usage"]["cost_usd"] is None
    assert info.usage == kitaru.Usage(input_tokens=14, output_tokens=6, cost_usd=None)


async def test_calls_in_a_checkpoint_are_summed_on_it_and_on_the_run(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("private")

    @checkpoint
    async def research() -> str:
        a = await kitaru.llm("q", model="gpt-4o-mini", mock_response="known price")
        b = await kitaru.llm("q", model="scripted/m")
        return a + b

    @flow
    async def f() -> str:
        return await research()

    run = await rt.start(f)
    await run.result()
    info = await run.info()
    usage = info.checkpoints[0].metadata["usage"]
    assert usage["input_tokens"] == MOCK_IN + 7
    assert usage["output_tokens"] == MOCK_OUT + 3
    assert usage["cost_usd"] > 0  # the known part; the unknown one adds nothing
    assert usage["calls"] == 2
    assert usage["models"] == ["gpt-4o-mini", "scripted/m"]
    assert info.usage.input_tokens == MOCK_IN + 7
    assert info.usage.cost_usd == pytest.approx(usage["cost_usd"])


async def test_a_failed_checkpoint_still_pays_for_its_calls(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("a", "b")

    @checkpoint(retries=1, backoff=0)
    async def shaky() -> str:
        await kitaru.llm("q", model="scripted/m")
        raise RuntimeError("parse failed")

    @flow
    async def f() -> str:
        try:
            return await shaky()
        except RuntimeError:
            return "gave up"

    run = await rt.start(f)
    assert await run.result() == "gave up"
    info = await run.info()
    cp = info.checkpoints[0]
    assert (cp.status, cp.attempts) == ("failed", 2)
    assert cp.metadata["usage"]["calls"] == 2
    assert info.usage.input_tokens == 14


async def test_replayed_calls_add_nothing(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("x")

    @flow
    async def f() -> str:
        return await kitaru.llm("q", model="scripted/m")

    run = await rt.start(f)
    await run.result()
    replayed = await rt.replay(run.id, overrides={"llm": "edited"})
    assert await replayed.result() == "edited"
    assert (await replayed.info()).usage == kitaru.Usage(input_tokens=0, output_tokens=0)
