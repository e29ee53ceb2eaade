"""Replays follow the journal strictly: changed code fails loudly; gathers replay in order."""

from __future__ import annotations

import asyncio

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


async def test_changed_flow_code_raises_non_determinism_error(
    make_runtime: RuntimeFactory,
) -> None:
    gate = anyio.Event()

    @checkpoint
    async def fetch() -> str:
        return "data"

    @checkpoint
    async def block() -> None:
        await gate.wait()

    @flow(name="agent")
    async def v1() -> str:
        await fetch()
        await block()
        return "v1"

    async with make_runtime() as rt:
        await rt.start(v1, run_id="nd")
        with anyio.fail_after(5):
            while not (await rt.get_run("nd")).checkpoints:
                await anyio.sleep(0.01)

    @checkpoint
    async def summarise() -> str:
        return "other"

    @flow(name="agent")
    async def v2() -> str:
        await summarise()  # position 0 recorded 'fetch'
        return "v2"

    async with make_runtime(flows=[v2]) as rt:
        with pytest.raises(kitaru.FlowFailed) as caught:
            await rt.result("nd")
        err = caught.value.original
        assert isinstance(err, kitaru.NonDeterminismError)
        assert (err.run_id, err.position) == ("nd", 0)
        assert "fetch" in err.recorded and "summarise" in err.new
        message = str(err)
        assert "position 0" in message and "'checkpoint fetch'" in message
        info = await rt.get_run("nd")
        assert info.status == "failed"
        assert info.error_type == "kitaru.NonDeterminismError"
        # Nothing of v2 was recorded over v1's journal.
        assert [c.name for c in info.checkpoints] == ["fetch"]


async def test_gathered_checkpoints_replay_by_call_position(make_runtime: RuntimeFactory) -> None:
    """Positions are fixed at call time, so completion order does not matter."""
    calls: list[str] = []
    gate = anyio.Event()

    def build(block: bool):
        @checkpoint
        async def slow(x: int) -> int:
            calls.append(f"slow{x}")
            await anyio.sleep(0.05)
            return x

        @checkpoint
        async def fast(x: int) -> int:
            calls.append(f"fast{x}")
            return x * 100

        @checkpoint
        async def after() -> str:
            calls.append("after")
            if block:
                await gate.wait()
            return "done"

        @flow(name="fan")
        async def fan() -> tuple[list[int], list[int], str]:
            a = list(await asyncio.gather(slow(1), fast(2), slow(3)))
            results: list[int] = [0, 0]

            async def put(i: int, x: int) -> None:
                results[i] = await fast(x)

            async with anyio.create_task_group() as tg:
                tg.start_soon(put, 0, 5)
                tg.start_soon(put, 1, 6)
            return a, results, await after()

        return fan

    async with make_runtime() as rt:
        await rt.start(build(True), run_id="g")
        with anyio.fail_after(5):
            while "after" not in calls:
                await anyio.sleep(0.01)
        positions = [(c.position, c.name) for c in (await rt.get_run("g")).checkpoints]
        assert positions == [(0, "slow"), (1, "fast"), (2, "slow"), (3, "fast"), (4, "fast")]
    calls.clear()
    async with make_runtime(flows=[build(False)]) as rt:
        assert await rt.result("g") == ([1, 200, 3], [500, 600], "done")
    assert calls == ["after"]
