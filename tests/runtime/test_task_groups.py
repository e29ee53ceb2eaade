"""Flows with task groups: signals and store failures raised inside one are not flow failures.

Inside an anyio task group or an ``asyncio.TaskGroup``, kitaru's eviction and
continue-as-new signals and a store failure arrive wrapped in an exception
group. The actor unwraps them: an evicted flow stays suspended (and the
runtime keeps serving other runs), a continue-as-new restarts the run, and a
store failure restarts it from its journal instead of failing it.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.testing import always_evict
from tests._stores import FlakyStore
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


@checkpoint
async def shout(text: str) -> str:
    return text.upper()


@flow
async def two_waits_in_an_anyio_group() -> list[str]:
    got: dict[str, str] = {}

    async def branch(topic: str) -> None:
        got[topic] = await shout(await kitaru.wait(str, topic=topic))

    async with anyio.create_task_group() as tg:
        tg.start_soon(branch, "a")
        tg.start_soon(branch, "b")
    return [got["a"], got["b"]]


@flow
async def two_waits_in_an_asyncio_group() -> list[str]:
    async def branch(topic: str) -> str:
        return await shout(await kitaru.wait(str, topic=topic))

    async with asyncio.TaskGroup() as tg:
        a = tg.create_task(branch("a"))
        b = tg.create_task(branch("b"))
    return [a.result(), b.result()]


@flow
async def plain() -> str:
    return await shout("still serving")


async def until_status(rt: kitaru.Runtime, run_id: str, status: str) -> None:
    with anyio.fail_after(10):
        while (await rt.get_run(run_id)).status != status:
            await anyio.sleep(0.01)


@pytest.mark.parametrize("fl", [two_waits_in_an_anyio_group, two_waits_in_an_asyncio_group])
async def test_an_eviction_inside_a_task_group_suspends_the_run(
    make_runtime: RuntimeFactory, fl: kitaru.Flow[[], list[str]]
) -> None:
    async with make_runtime(flows=[fl, plain], **always_evict()) as rt:
        run = await rt.start(fl)
        await until_status(rt, run.id, "waiting")
        with anyio.fail_after(10):
            while rt.is_live(run.id):  # evicted: its task ended, only rows remain
                await anyio.sleep(0.01)
        # The runtime is unharmed and serves other runs.
        assert await (await rt.start(plain)).result() == "STILL SERVING"
        await rt.send(run.id, "x", topic="a")
        await rt.send(run.id, "y", topic="b")
        with anyio.fail_after(10):
            assert await run.result() == ["X", "Y"]
        assert (await rt.get_run(run.id)).status == "completed"


@flow
async def rounds_in_a_group(n: int) -> int:
    async def next_round() -> None:
        await shout(f"round {n}")
        if n < 3:
            kitaru.continue_as_new(n + 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(next_round)
    return n


async def test_continue_as_new_inside_a_task_group_restarts_the_run(
    make_runtime: RuntimeFactory,
) -> None:
    async with make_runtime(flows=[rounds_in_a_group]) as rt:
        run = await rt.start(rounds_in_a_group, 1)
        with anyio.fail_after(10):
            assert await run.result() == 3
        info = await rt.get_run(run.id)
        assert info.status == "completed"
        assert [c.name for c in info.checkpoints] == ["shout"]  # the last round's journal


@flow
async def checkpoints_in_a_group() -> list[str]:
    out: list[str] = []

    async def branch(text: str) -> None:
        out.append(await shout(text))

    async with anyio.create_task_group() as tg:
        tg.start_soon(branch, "one")
    return out


async def test_a_store_failure_inside_a_task_group_restarts_the_run() -> None:
    FlakyStore.failures = 1
    async with kitaru.runtime(store="flaky://group", restart_backoff=0.01) as rt:
        run = await rt.start(checkpoints_in_a_group)
        with anyio.fail_after(10):
            assert await run.result() == ["ONE"]
        assert rt.supervisor.restarts == 1
        assert (await rt.get_run(run.id)).status == "completed"


@flow
async def two_failures() -> None:
    async def boom(text: str) -> None:
        raise ValueError(text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(boom, "left")
        tg.start_soon(boom, "right")


async def test_a_group_of_ordinary_errors_still_fails_the_run(
    make_runtime: RuntimeFactory,
) -> None:
    async with make_runtime(flows=[two_failures]) as rt:
        run = await rt.start(two_failures)
        with pytest.raises(kitaru.FlowFailed, match="ExceptionGroup"):
            await run.result()
