"""Eviction: idle flows leave memory, wake on messages and deadlines, bounded residency."""

from __future__ import annotations

import gc
import logging

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.testing import FakeClock

pytestmark = pytest.mark.anyio

runs_of_step: list[int] = []


@checkpoint
async def step(i: int) -> int:
    runs_of_step.append(i)
    return i


@flow
async def waiter(n: int) -> str:
    for i in range(n):
        await step(i)
    return await kitaru.wait(str)


async def until(predicate, limit: float = 5) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.005)


async def test_idle_flow_is_evicted_after_the_grace_and_rehydrated_by_a_message() -> None:
    runs_of_step.clear()
    async with kitaru.runtime(store="memory://", idle_grace=0.05) as rt:
        run = await rt.start(waiter, 3)
        await until(lambda: rt.supervisor.evictions == 1)
        assert not rt.is_live(run.id)  # no task, no actor: only rows
        info = await rt.get_run(run.id)
        assert (info.status, info.owner) == ("waiting", None)
        await rt.send(run.id, "hi")
        assert await run.result() == "hi"
    assert runs_of_step == [0, 1, 2]  # rehydration replayed them from the journal


async def test_resident_flow_answers_without_replay() -> None:
    async with kitaru.runtime(store="memory://", idle_grace=30) as rt:
        run = await rt.start(waiter, 1)
        await until(lambda: rt.supervisor.resident > 0)
        await rt.send(run.id, "fast")
        assert await run.result() == "fast"
        assert rt.supervisor.evictions == 0


async def test_residency_is_bounded_least_recently_active_first() -> None:
    async with kitaru.runtime(store="memory://", idle_grace=30, max_resident=2) as rt:
        first = await rt.start(waiter, 0, run_id="first")
        await until(lambda: rt.supervisor.is_resident("first"))
        await rt.start(waiter, 0, run_id="second")
        await until(lambda: rt.supervisor.is_resident("second"))
        await rt.start(waiter, 0, run_id="third")
        await until(lambda: rt.supervisor.evictions == 1)
        assert not rt.is_live("first")
        assert rt.is_live("second") and rt.is_live("third")
        await rt.send("first", "back")
        assert await first.result() == "back"


async def test_swallowed_eviction_is_detected_logged_and_discarded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @flow
    async def stubborn() -> str:
        try:
            await kitaru.wait(str)
        except BaseException:
            return "escaped"
        return "answered"

    caplog.set_level(logging.ERROR, logger="kitaru")
    async with kitaru.runtime(store="memory://", idle_grace=0) as rt:
        run = await rt.start(stubborn)
        await until(lambda: rt.supervisor.swallowed_evictions == 1)
        assert (await rt.get_run(run.id)).status == "waiting"  # "escaped" was discarded
        assert "caught kitaru's eviction signal" in caplog.text
        assert run.id in caplog.text
        await rt.send(run.id, "now")
        assert await run.result() == "answered"


async def test_many_waiting_flows_leave_no_tasks_behind() -> None:
    async with kitaru.runtime(store="memory://", idle_grace=0) as rt:
        base = len(anyio.get_running_tasks())
        runs = [await rt.start(waiter, 1) for _ in range(200)]
        await until(lambda: rt.supervisor.evictions == 200)
        gc.collect()
        assert len(anyio.get_running_tasks()) == base
        assert rt.live_runs == 0
        for r in runs:
            await rt.send(r.id, "go")
        for r in runs:
            assert await r.result() == "go"


async def test_sleep_survives_eviction_with_a_fake_clock() -> None:
    clock = FakeClock()

    @flow
    async def napper() -> str:
        await kitaru.sleep(3600)
        return "rested"

    async with kitaru.runtime(store="memory://", idle_grace=0, clock=clock) as rt:
        run = await rt.start(napper)
        await until(lambda: rt.supervisor.evictions == 1)
        info = await rt.get_run(run.id)
        assert info.status == "sleeping"
        clock.advance(3599)
        await anyio.sleep(0.05)
        assert (await rt.get_run(run.id)).status == "sleeping"
        clock.advance(1)
        with anyio.fail_after(5):
            assert await run.result() == "rested"


async def test_wait_timeout_of_an_evicted_run_fires_with_a_fake_clock() -> None:
    clock = FakeClock()

    @flow
    async def deadline() -> str:
        try:
            return await kitaru.wait(str, timeout=60)
        except kitaru.WaitTimeout:
            return "too late"

    async with kitaru.runtime(store="memory://", idle_grace=0, clock=clock) as rt:
        run = await rt.start(deadline)
        await until(lambda: rt.supervisor.evictions == 1)
        clock.advance(61)
        with anyio.fail_after(5):
            assert await run.result() == "too late"
