"""A run interrupted mid-flow resumes from its journal: finished checkpoints never rerun."""

from __future__ import annotations

import anyio
import pytest

from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


def make_flow(calls: list[str], gate: anyio.Event | None):
    @checkpoint
    async def step(i: int) -> int:
        calls.append(f"step{i}")
        if i == 2 and gate is not None:
            await gate.wait()  # "crash" here: the runtime is closed while we block
        return i * 10

    @flow
    async def pipeline(n: int) -> list[int]:
        return [await step(i) for i in range(n)]

    return pipeline


async def test_interrupted_run_resumes_without_rerunning_finished_checkpoints(
    make_runtime: RuntimeFactory,
) -> None:
    calls: list[str] = []
    blocked = make_flow(calls, anyio.Event())
    async with make_runtime() as rt:
        run = await rt.start(blocked, 4, run_id="r1")
        with anyio.fail_after(5):
            while calls != ["step0", "step1", "step2"]:
                await anyio.sleep(0.01)
        info = await rt.get_run("r1")
        assert info.status == "running"
        assert [c.name for c in info.checkpoints] == ["step", "step"]
    # The runtime is gone; the run is left 'running' with its lease released.
    calls.clear()
    resumed = make_flow(calls, None)
    async with make_runtime(flows=[resumed]) as rt:
        assert await rt.result(run.id) == [0, 10, 20, 30]
        assert calls == ["step2", "step3"]
        info = await rt.get_run(run.id)
        assert info.status == "completed"
        assert len(info.checkpoints) == 4


async def test_start_with_same_run_id_resumes_and_executes_once(
    make_runtime: RuntimeFactory,
) -> None:
    calls: list[str] = []
    async with make_runtime() as rt:
        first = await rt.start(make_flow(calls, None), 3, run_id="same")
        second = await rt.start(make_flow(calls, None), 3, run_id="same")
        assert first.id == second.id == "same"
        assert await first.result() == await second.result() == [0, 10, 20]
    assert calls == ["step0", "step1", "step2"]
    async with make_runtime() as rt:
        again = await rt.start(make_flow(calls, None), 3, run_id="same")
        assert await again.result() == [0, 10, 20]
    assert calls == ["step0", "step1", "step2"]


async def test_unknown_flow_is_left_alone_until_known(make_runtime: RuntimeFactory) -> None:
    calls: list[str] = []
    async with make_runtime() as rt:
        await rt.start(make_flow(calls, anyio.Event()), 3, run_id="later")
        with anyio.fail_after(5):
            while len(calls) < 3:
                await anyio.sleep(0.01)
    async with make_runtime() as rt:  # does not know the flow: nothing resumes
        await anyio.sleep(0.05)
        assert (await rt.get_run("later")).status == "running"
        calls.clear()
        handle = await rt.start(make_flow(calls, None), 3, run_id="later")
        assert await handle.result() == [0, 10, 20]
        assert calls == ["step2"]
