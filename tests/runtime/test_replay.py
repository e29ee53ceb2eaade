"""rt.replay, rt.retry and rt.find_run: reuse what a run recorded, run the rest live."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import kitaru
from kitaru import checkpoint, flow

pytestmark = pytest.mark.anyio


class Steps:
    """Counts the calls of each checkpoint and lets a test change the flow's behaviour."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail: set[str] = set()
        self.mode = "old"

    def hit(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.fail:
            raise ValueError(f"{name} broke")


def pipeline(steps: Steps) -> kitaru.Flow[Any, Any]:
    @checkpoint
    async def research(topic: str) -> str:
        steps.hit("research")
        return f"notes on {topic}"

    @checkpoint
    async def draft(notes: str) -> str:
        steps.hit("draft")
        return f"draft of {notes}"

    @checkpoint
    async def polish(text: str) -> str:
        steps.hit("polish")
        return text.upper()

    @flow
    async def writer(topic: str) -> str:
        notes = await research(topic)
        text = await draft(notes)
        return await polish(text)

    return writer


async def test_replay_reuses_the_checkpoints_before_the_chosen_one(rt: kitaru.Runtime) -> None:
    steps = Steps()
    writer = pipeline(steps)
    run = await rt.start(writer, "cats")
    assert await run.result() == "DRAFT OF NOTES ON CATS"

    new = await rt.replay(run.id, from_checkpoint="draft")
    assert new.id != run.id
    assert await new.result() == "DRAFT OF NOTES ON CATS"
    assert steps.calls == {"research": 1, "draft": 2, "polish": 2}
    info = await new.info()
    assert info.replay_of == run.id
    assert info.input == {"topic": "cats"}
    assert [c.name for c in info.checkpoints] == ["research", "draft", "polish"]
    # The original is untouched.
    assert len((await rt.get_run(run.id)).checkpoints) == 3


async def test_replay_with_an_override_runs_everything_after_it(rt: kitaru.Runtime) -> None:
    steps = Steps()
    writer = pipeline(steps)
    run = await rt.start(writer, "cats")
    await run.result()

    new = await rt.replay(run.id, overrides={"research": "better notes"})
    assert await new.result() == "DRAFT OF BETTER NOTES"
    assert steps.calls == {"research": 1, "draft": 2, "polish": 2}
    first = (await new.info()).checkpoints[0]
    assert (first.name, first.metadata) == ("research", {"override": True})


async def test_override_names_one_call_of_a_repeated_checkpoint(rt: kitaru.Runtime) -> None:
    calls: list[int] = []

    @checkpoint
    async def square(n: int) -> int:
        calls.append(n)
        return n * n

    @checkpoint
    async def total(values: list[int]) -> int:
        return sum(values)

    @flow
    async def squares() -> int:
        values = [await square(n) for n in (1, 2, 3)]
        return await total(values)

    run = await rt.start(squares)
    assert await run.result() == 14
    new = await rt.replay(run.id, from_checkpoint="total", overrides={"square#2": 100})
    assert await new.result() == 1 + 100 + 9
    assert calls == [1, 2, 3]  # no square ran again
    by_position = await rt.replay(run.id, from_checkpoint=3, overrides={1: 10})
    assert await by_position.result() == 1 + 10 + 9


async def test_bad_replay_requests_are_refused_and_create_nothing(rt: kitaru.Runtime) -> None:
    steps = Steps()
    writer = pipeline(steps)
    run = await rt.start(writer, "cats")
    await run.result()
    before = len(await rt.list_runs())

    with pytest.raises(kitaru.ReplayError, match="does not fit str"):
        await rt.replay(run.id, overrides={"research": {"not": "a string"}})
    with pytest.raises(kitaru.ReplayError, match=r"no checkpoint named 'nope'.*'research'"):
        await rt.replay(run.id, from_checkpoint="nope")
    with pytest.raises(kitaru.ReplayError, match="at or after the replay point"):
        await rt.replay(run.id, from_checkpoint="draft", overrides={"polish": "x"})
    with pytest.raises(kitaru.ReplayError, match="called 1 time"):
        await rt.replay(run.id, from_checkpoint="draft#2")
    with pytest.raises(kitaru.ReplayError, match="N >= 1"):
        await rt.replay(run.id, from_checkpoint="draft#0")
    with pytest.raises(kitaru.RunNotFound):
        await rt.replay("missing", from_checkpoint="draft")
    assert len(await rt.list_runs()) == before


class Notes(BaseModel):
    text: str
    score: int


async def test_an_override_is_validated_into_the_checkpoint_type(rt: kitaru.Runtime) -> None:
    @checkpoint
    async def research() -> Notes:
        return Notes(text="a", score=1)

    @checkpoint
    async def report(notes: Notes) -> str:
        return f"{notes.text}:{notes.score}"

    @flow
    async def study() -> str:
        return await report(await research())

    run = await rt.start(study)
    assert await run.result() == "a:1"
    new = await rt.replay(run.id, overrides={"research": {"text": "b", "score": "7"}})
    assert await new.result() == "b:7"
    with pytest.raises(kitaru.ReplayError, match="score: Field required"):
        await rt.replay(run.id, overrides={"research": {"text": "b"}})


async def test_a_large_override_goes_to_the_artifact_store(
    make_runtime: Any,
) -> None:
    steps = Steps()
    writer = pipeline(steps)
    async with make_runtime(inline_threshold=64) as rt:
        run = await rt.start(writer, "cats")
        await run.result()
        big = "n" * 500
        new = await rt.replay(run.id, overrides={"research": big})
        assert await new.result() == f"DRAFT OF {big.upper()}"
        assert (await new.info()).checkpoints[0].artifact is not None


async def test_replay_before_a_divergence_cures_a_nondeterminism_error(
    rt: kitaru.Runtime,
) -> None:
    steps = Steps()

    @checkpoint
    async def fetch() -> int:
        steps.hit("fetch")
        return 1

    @checkpoint
    async def old_step(x: int) -> int:
        steps.hit("old_step")
        return x + 1

    @checkpoint
    async def new_step(x: int) -> int:
        steps.hit("new_step")
        return x + 10

    @flow
    async def evolving() -> int:
        x = await fetch()
        if steps.mode == "old":
            return await old_step(x)
        return await new_step(x)

    steps.fail.add("old_step")
    run = await rt.start(evolving)
    with pytest.raises(kitaru.FlowFailed):
        await run.result()
    steps.mode = "new"  # the fix changes which calls the flow makes
    await rt.retry(run.id)
    with pytest.raises(kitaru.FlowFailed) as caught:
        await run.result()
    assert caught.value.error_type == "kitaru.NonDeterminismError"

    new = await rt.replay(run.id, from_checkpoint="old_step")
    assert await new.result() == 11
    assert steps.calls == {"fetch": 1, "old_step": 1, "new_step": 1}


async def test_retry_runs_the_failed_checkpoint_again_and_keeps_its_history(
    rt: kitaru.Runtime,
) -> None:
    steps = Steps()
    writer = pipeline(steps)
    steps.fail.add("draft")
    run = await rt.start(writer, "cats")
    with pytest.raises(kitaru.FlowFailed, match="draft broke"):
        await run.result()
    assert (await rt.get_run(run.id)).status == "failed"

    steps.fail.clear()
    handle = await rt.retry(run.id)
    assert handle.id == run.id
    assert await run.result() == "DRAFT OF NOTES ON CATS"
    assert steps.calls == {"research": 1, "draft": 2, "polish": 1}
    info = await rt.get_run(run.id)
    assert (info.status, info.error, info.traceback) == ("completed", None, None)
    draft = info.checkpoints[1]
    assert (draft.name, draft.status, draft.attempts) == ("draft", "completed", 2)
    assert draft.errors == ["ValueError: draft broke"]


async def test_retry_after_an_error_in_flow_code(rt: kitaru.Runtime) -> None:
    steps = Steps()

    @checkpoint
    async def work() -> int:
        steps.hit("work")
        return 5

    @flow
    async def strict() -> int:
        value = await work()
        if steps.mode == "old":
            raise RuntimeError("bug in the flow")
        return value

    run = await rt.start(strict)
    with pytest.raises(kitaru.FlowFailed, match="bug in the flow"):
        await run.result()
    steps.mode = "fixed"
    await rt.retry(run.id)
    assert await run.result() == 5
    assert steps.calls == {"work": 1}


async def test_retry_keeps_a_failure_the_flow_caught(rt: kitaru.Runtime) -> None:
    steps = Steps()
    steps.fail.add("flaky")

    @checkpoint
    async def flaky() -> int:
        steps.hit("flaky")
        return 1

    @checkpoint
    async def after() -> int:
        steps.hit("after")
        return 2

    @flow
    async def tolerant() -> str:
        try:
            await flaky()
            got = "flaky ok"
        except ValueError:
            got = "flaky failed"
        await after()
        if steps.mode == "old":
            raise RuntimeError("late bug")
        return got

    run = await rt.start(tolerant)
    with pytest.raises(kitaru.FlowFailed):
        await run.result()
    steps.fail.clear()
    steps.mode = "fixed"
    await rt.retry(run.id)
    # The caught failure replays as recorded, so the flow takes the same path.
    assert await run.result() == "flaky failed"
    assert steps.calls == {"flaky": 1, "after": 1}


async def test_only_failed_runs_can_be_retried(rt: kitaru.Runtime) -> None:
    writer = pipeline(Steps())
    run = await rt.start(writer, "cats")
    await run.result()
    with pytest.raises(kitaru.ReplayError, match="completed; only failed runs"):
        await rt.retry(run.id)
    with pytest.raises(kitaru.RunNotFound):
        await rt.retry("missing")


async def test_find_run_accepts_a_unique_prefix(rt: kitaru.Runtime) -> None:
    writer = pipeline(Steps())
    for run_id in ("abc123", "abc456", "xyz"):
        await (await rt.start(writer, "t", run_id=run_id)).result()
    assert await rt.find_run("xy") == "xyz"
    assert await rt.find_run("abc1") == "abc123"
    assert await rt.find_run("abc123") == "abc123"
    with pytest.raises(kitaru.RunNotFound, match=r"ambiguous.*abc123, abc456"):
        await rt.find_run("abc")
    with pytest.raises(kitaru.RunNotFound, match="no run 'q'"):
        await rt.find_run("q")


async def test_a_replay_of_a_flow_hosted_elsewhere_waits_for_a_worker(
    make_runtime: Any,
) -> None:
    steps = Steps()
    writer = pipeline(steps)
    async with make_runtime() as rt:
        run = await rt.start(writer, "cats")
        await run.result()
    async with make_runtime() as viewer:  # knows no flows: cannot host the replay
        new = await viewer.replay(run.id, from_checkpoint="polish")
        info = await viewer.get_run(new.id)
        assert (info.status, info.owner) == ("running", None)
    async with make_runtime(flows=[writer]) as worker:
        assert await worker.result(new.id) == "DRAFT OF NOTES ON CATS"
    assert steps.calls == {"research": 1, "draft": 1, "polish": 2}
