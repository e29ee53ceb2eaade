"""Cancelling: it cascades to child flows, and a cancelled child replays as cancelled."""

from __future__ import annotations

import anyio
import pytest

import kitaru
from kitaru import flow
from kitaru.testing import always_evict
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


@flow
async def waits_forever() -> str:
    return await kitaru.wait(str)


@flow
async def parent_of_a_waiter() -> str:
    return await waits_forever()


async def until(rt: kitaru.Runtime, run_id: str, *statuses: str) -> kitaru.RunInfo:
    """Wait until ``run_id`` exists and has one of ``statuses``."""
    with anyio.fail_after(10):
        while True:
            try:
                info = await rt.get_run(run_id)
            except kitaru.RunNotFound:  # a child flow not started yet
                info = None
            if info is not None and info.status in statuses:
                return info
            await anyio.sleep(0.01)


async def test_cancelling_a_parent_cancels_its_children(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(flows=[parent_of_a_waiter, waits_forever]) as rt:
        parent = await rt.start(parent_of_a_waiter)
        child_id = f"{parent.id}.0"
        await until(rt, child_id, "waiting")
        unrelated = await rt.start(waits_forever, run_id=f"{parent.id}.other")  # no parent link
        assert await rt.cancel(parent.id)
        assert (await until(rt, child_id, "cancelled")).status == "cancelled"
        assert (await rt.get_run(unrelated.id)).status in ("running", "waiting")
        with pytest.raises(kitaru.FlowCancelled):
            await parent.result()
        await rt.cancel(unrelated.id)


@flow
async def outlives_its_child() -> str:
    try:
        await waits_forever()
        seen = "finished"
    except kitaru.FlowCancelled:
        seen = "child cancelled"
    await kitaru.wait(str, topic="go")
    return seen


async def test_a_cancelled_child_replays_as_cancelled(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(flows=[outlives_its_child, waits_forever], **always_evict()) as rt:
        parent = await rt.start(outlives_its_child)
        child_id = f"{parent.id}.0"
        await until(rt, child_id, "waiting")
        await rt.cancel(child_id)
        await until(rt, parent.id, "waiting")  # now waiting on "go", after the child
        with anyio.fail_after(10):
            while rt.is_live(parent.id):
                await anyio.sleep(0.01)
        await rt.send(parent.id, "now", topic="go")  # rehydrates: the child's entry replays
        with anyio.fail_after(10):
            assert await parent.result() == "child cancelled"
