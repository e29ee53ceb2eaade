"""Supervision: bounded residency, restarts after infrastructure failures."""

from __future__ import annotations

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from tests._stores import FlakyStore

pytestmark = pytest.mark.anyio


async def test_infrastructure_failure_restarts_the_run_from_its_journal() -> None:
    calls: list[int] = []

    @checkpoint
    async def step(i: int) -> int:
        calls.append(i)
        return i

    @flow
    async def f() -> list[int]:
        return [await step(0), await step(1)]

    FlakyStore.failures = 2
    async with kitaru.runtime(store="flaky://restart", restart_backoff=0.01) as rt:
        run = await rt.start(f)
        assert await run.result() == [0, 1]
        assert rt.supervisor.restarts == 2
    # step 0 ran three times: twice its commit failed, the third time it stuck.
    assert calls == [0, 0, 0, 1]


async def test_restarts_are_bounded_and_the_run_is_left_for_recovery() -> None:
    @checkpoint
    async def step() -> int:
        return 1

    @flow
    async def g() -> int:
        return await step()

    FlakyStore.failures = 100
    async with kitaru.runtime(store="flaky://bounded", restart_backoff=0.001, max_restarts=2) as rt:
        run = await rt.start(g, run_id="b")
        with anyio.fail_after(5):
            while rt.is_live("b"):
                await anyio.sleep(0.01)
        assert (await rt.get_run("b")).status == "running"  # not failed: not its fault
        FlakyStore.failures = 0
        assert await rt.recover() == 1  # the sweep takes it back once the store works
        assert await run.result() == 1


async def test_max_live_runs_bounds_concurrency() -> None:
    live = 0
    peak = 0
    release = anyio.Event()

    @checkpoint
    async def hold() -> None:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await release.wait()
        live -= 1

    @flow
    async def h() -> None:
        await hold()

    async with kitaru.runtime(store="memory://", max_live_runs=2) as rt:
        runs = [await rt.start(h) for _ in range(6)]
        await anyio.sleep(0.05)
        assert peak == 2
        release.set()
        for r in runs:
            await r.result()
    assert peak == 2
