"""kitaru.llm in a flow is a journal entry: recorded once, replayed without calling the provider."""

from __future__ import annotations

import anyio
import pydantic
import pytest

import kitaru
from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory
from tests.llm.conftest import Script

pytestmark = pytest.mark.anyio


class Verdict(pydantic.BaseModel):
    approved: bool
    notes: str


async def test_answer_is_recorded_as_an_llm_entry(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("Paris")

    @flow
    async def f(q: str) -> str:
        return await kitaru.llm(q, model="scripted/m")

    run = await rt.start(f, "capital of France?")
    assert await run.result() == "Paris"
    info = await run.info()
    (entry,) = info.checkpoints
    assert (entry.kind, entry.name, entry.status, entry.attempts) == ("llm", "llm", "completed", 1)
    assert scripted.calls[0]["messages"] == [{"role": "user", "content": "capital of France?"}]


async def test_a_waiting_flow_rehydrated_from_the_journal_does_not_call_again(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("draft one", '{"approved": true, "notes": "fine"}')

    @flow
    async def f() -> str:
        draft = await kitaru.llm("write", model="scripted/m", name="draft")
        verdict = await kitaru.llm(f"judge {draft}", model="scripted/m", schema=Verdict)
        ok = await kitaru.wait(bool)  # evicted here in always-evict mode
        again = await kitaru.llm("once more", model="scripted/m") if not ok else "done"
        return f"{draft}|{verdict.notes}|{again}"

    run = await rt.start(f)
    while (await run.info()).status != "waiting":
        await anyio.sleep(0.01)
    await rt.send(run.id, True)
    assert await run.result() == "draft one|fine|done"
    assert scripted.count == 2
    assert [c.name for c in (await run.info()).checkpoints] == ["draft", "llm", "input"]


async def test_a_restarted_runtime_on_the_same_store_does_not_call_again(
    make_runtime: RuntimeFactory, scripted: Script
) -> None:
    scripted.add("first", "second")
    gate = anyio.Event()

    @checkpoint
    async def block() -> None:
        await gate.wait()

    @flow
    async def f() -> str:
        a = await kitaru.llm("one", model="scripted/m")
        b = await kitaru.llm("two", model="scripted/m")
        await block()
        return a + b

    async with make_runtime(flows=[f]) as rt:
        run = await rt.start(f)
        while len((await run.info()).checkpoints) < 2:
            await anyio.sleep(0.01)
    # The first runtime closed while the checkpoint blocked: recovery re-executes the
    # flow from the top, and both LLM answers come from the journal.
    gate.set()
    async with make_runtime(flows=[f]) as rt:
        assert await rt.result(run.id) == "firstsecond"
    assert scripted.count == 2


async def test_gathered_calls_keep_their_positions(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("a", "b", "c")

    @flow
    async def f() -> list[str]:
        import asyncio

        calls = [kitaru.llm(p, model="scripted/m", name=f"q{p}") for p in "123"]
        return list(await asyncio.gather(*calls))

    run = await rt.start(f)
    await run.result()
    info = await run.info()
    assert [(c.position, c.name) for c in info.checkpoints] == [(0, "q1"), (1, "q2"), (2, "q3")]


async def test_a_changed_call_is_a_non_determinism_error(
    make_runtime: RuntimeFactory, scripted: Script
) -> None:
    scripted.add("x")
    calls_llm = True

    @checkpoint
    async def step() -> str:
        return "s"

    @flow
    async def f() -> str:
        if calls_llm:
            await kitaru.llm("q", model="scripted/m")
        else:
            await step()
        return await kitaru.wait(str)

    async with make_runtime(flows=[f]) as rt:
        run = await rt.start(f)
        while (await run.info()).status != "waiting":
            await anyio.sleep(0.01)
    calls_llm = False
    async with make_runtime(flows=[f]) as rt:
        await rt.send(run.id, "go")
        with pytest.raises(kitaru.FlowFailed) as caught:
            await rt.result(run.id)
    assert caught.value.error_type == "kitaru.NonDeterminismError"
    assert "'llm llm'" in caught.value.error
    assert scripted.count == 1


async def test_replay_overrides_an_llm_answer(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("original", '{"approved": false, "notes": "no"}')

    @flow
    async def f() -> str:
        text = await kitaru.llm("q", model="scripted/m", name="ask")
        verdict = await kitaru.llm("judge", model="scripted/m", name="judge", schema=Verdict)
        return f"{text}:{verdict.approved}"

    run = await rt.start(f)
    assert await run.result() == "original:False"
    new = await rt.replay(
        run.id, overrides={"ask": "edited", "judge": {"approved": True, "notes": "ok"}}
    )
    assert await new.result() == "edited:True"
    assert scripted.count == 2


async def test_sync_flows_call_without_await(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("from a thread")

    @flow
    def f() -> str:
        answer: str = kitaru.llm("q", model="scripted/m")  # type: ignore[assignment]
        return answer

    run = await rt.start(f)
    assert await run.result() == "from a thread"
    assert (await run.info()).checkpoints[0].kind == "llm"


async def test_inside_a_checkpoint_the_checkpoint_is_recorded(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("inner one", "inner two", "sync body")

    @checkpoint
    async def research(topic: str) -> str:
        a = await kitaru.llm(topic, model="scripted/m")
        b = await kitaru.llm(a, model="scripted/m")
        return f"{a}/{b}"

    @checkpoint
    def sync_research() -> int:
        return len(kitaru.llm("q", model="scripted/m"))  # type: ignore[arg-type]

    @flow
    async def f() -> str:
        return f"{await research('t')}:{await sync_research()}"

    run = await rt.start(f)
    assert await run.result() == "inner one/inner two:9"
    assert [c.kind for c in (await run.info()).checkpoints] == ["checkpoint", "checkpoint"]


async def test_outside_a_flow_it_just_calls(scripted: Script) -> None:
    scripted.add("plain")
    assert await kitaru.llm("q", model="scripted/m", system="be brief") == "plain"
    assert scripted.calls[0]["messages"][0] == {"role": "system", "content": "be brief"}


def test_bad_arguments_are_refused_at_once() -> None:
    with pytest.raises(TypeError, match="prompt string or a list of chat messages"):
        kitaru.llm(42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="does not stream"):
        kitaru.llm("q", stream=True)
    with pytest.raises(ValueError, match="retries"):
        kitaru.llm("q", retries=-1)
