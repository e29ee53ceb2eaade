"""A plain ``def`` flow's durable calls belong to its own thread."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor

import pytest

import kitaru
from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


@checkpoint
def double(x: int) -> int:
    return 2 * x


@flow
def fans_out_to_a_pool() -> list[int]:
    # copy_context() carries the flow into the pool's threads: the calls would
    # be numbered by whichever thread gets there first.
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(contextvars.copy_context().run, double, i) for i in range(3)]
        return [f.result() for f in futures]


@flow
def in_its_own_thread() -> list[int]:
    return [double(i) for i in range(3)]


async def test_durable_calls_from_a_pool_thread_are_refused(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(flows=[fans_out_to_a_pool, in_its_own_thread]) as rt:
        with pytest.raises(kitaru.FlowFailed, match="another thread than the flow's own"):
            await (await rt.start(fans_out_to_a_pool)).result()
        assert await (await rt.start(in_its_own_thread)).result() == [0, 2, 4]
