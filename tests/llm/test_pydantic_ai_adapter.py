"""The PydanticAI adapter: a wrapped agent's model requests and tool calls are durable in a flow."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

import kitaru
from kitaru import Budget, flow
from kitaru.integrations.pydantic_ai import KitaruAgent
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


class Weather:
    """A FunctionModel that asks for the weather tool once, then answers; counts everything."""

    def __init__(self) -> None:
        self.requests = 0
        self.lookups: list[str] = []
        self.agent = Agent(FunctionModel(self.respond), name="weather")

        @self.agent.tool_plain
        def lookup(city: str) -> dict[str, Any]:
            self.lookups.append(city)
            return {"city": city, "sky": "sunny"}

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.requests += 1
        last = messages[-1]
        returns = [p for p in getattr(last, "parts", []) if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(
                parts=[ToolCallPart("lookup", {"city": "Paris"}, tool_call_id="call-1")]
            )
        content = returns[0].content
        return ModelResponse(parts=[TextPart(f"{content['city']} is {content['sky']}")])


async def test_requests_and_tool_calls_are_recorded(rt: kitaru.Runtime) -> None:
    weather = Weather()
    durable = KitaruAgent(weather.agent)

    @flow
    async def f(q: str) -> str:
        result = await durable.run(q)
        return str(result.output)

    run = await rt.start(f, "weather in Paris?")
    assert await run.result() == "Paris is sunny"
    info = await run.info()
    assert [(c.kind, c.name) for c in info.checkpoints] == [
        ("llm", "weather.request"),
        ("checkpoint", "weather.tool.lookup"),
        ("llm", "weather.request"),
    ]
    assert info.checkpoints[1].metadata["tool_call_id"] == "call-1"
    usage = info.checkpoints[0].metadata["usage"]
    assert usage["input_tokens"] > 0 and usage["cost_usd"] is None
    total_in = sum(c.metadata["usage"]["input_tokens"] for c in info.checkpoints if c.kind == "llm")
    assert info.usage.input_tokens == total_in
    assert (weather.requests, weather.lookups) == (2, ["Paris"])


async def test_a_rehydrated_run_calls_neither_model_nor_tool_again(
    make_runtime: RuntimeFactory,
) -> None:
    weather = Weather()
    durable = KitaruAgent(weather.agent)

    @flow
    async def f(q: str) -> str:
        result = await durable.run(q)
        ok = await kitaru.wait(bool)
        return f"{result.output} ({ok})"

    async with make_runtime(flows=[f]) as rt:
        run = await rt.start(f, "weather?")
        while (await run.info()).status != "waiting":
            await anyio.sleep(0.01)
    async with make_runtime(flows=[f]) as rt:
        await rt.send(run.id, True)
        assert await rt.result(run.id) == "Paris is sunny (True)"
    assert (weather.requests, weather.lookups) == (2, ["Paris"])


async def test_model_requests_count_against_the_budget(rt: kitaru.Runtime) -> None:
    weather = Weather()
    durable = KitaruAgent(weather.agent)

    @flow
    async def f() -> str:
        try:
            return str((await durable.run("weather?")).output)
        except kitaru.BudgetExceeded as exc:
            return f"stopped: {exc}"

    run = await rt.start(f, budget=Budget(tokens=1))
    result = await run.result()
    assert result.startswith("stopped: run ")
    assert weather.requests == 1 and weather.lookups == ["Paris"]


async def test_a_tool_asking_for_a_retry_replays_the_same_way(rt: kitaru.Runtime) -> None:
    tries: list[int] = []
    agent = Agent(TestModel(), name="picky")

    @agent.tool_plain
    def check(value: int) -> str:
        tries.append(value)
        if len(tries) == 1:
            raise ModelRetry("try again")
        return "fine"

    durable = KitaruAgent(agent)

    @flow
    async def f() -> str:
        result = await durable.run("go")
        await kitaru.wait(str)  # always-evict mode replays the agent run from here
        return str(result.output)

    run = await rt.start(f)
    while (await run.info()).status != "waiting":
        await anyio.sleep(0.01)
    await rt.send(run.id, "done")
    await run.result()
    assert len(tries) == 2
    statuses = [(c.name, c.status) for c in (await run.info()).checkpoints if c.kind != "llm"]
    assert statuses[:2] == [("picky.tool.check", "failed"), ("picky.tool.check", "completed")]


async def test_excluded_tools_run_live_every_time(rt: kitaru.Runtime) -> None:
    weather = Weather()
    durable = KitaruAgent(weather.agent, name="w", exclude_tools=["lookup"])

    @flow
    async def f() -> str:
        result = await durable.run("weather?")
        await kitaru.wait(str)
        return str(result.output)

    run = await rt.start(f)
    while (await run.info()).status != "waiting":
        await anyio.sleep(0.01)
    await rt.send(run.id, "go")
    assert await run.result() == "Paris is sunny"
    assert [c.name for c in (await run.info()).checkpoints] == ["w.request", "w.request", "input"]
    assert weather.requests == 2


async def test_streaming_in_a_flow_replays_the_recorded_response(rt: kitaru.Runtime) -> None:
    weather = Weather()
    durable = KitaruAgent(weather.agent)

    @flow
    async def f() -> str:
        async with durable.run_stream("weather?") as stream:
            return str(await stream.get_output())

    run = await rt.start(f)
    assert await run.result() == "Paris is sunny"
    assert weather.requests == 2


async def test_outside_a_flow_the_agent_runs_as_usual() -> None:
    weather = Weather()
    result = await KitaruAgent(weather.agent).run("weather?")
    assert result.output == "Paris is sunny"
    assert isinstance(result.all_messages()[0], ModelRequest)
    assert weather.requests == 2
