"""Parents awaiting their child flows give their execution slots to the children."""

from __future__ import annotations

import anyio
import pytest

from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


@checkpoint
async def work(n: int) -> int:
    await anyio.sleep(0.01)
    return n * 2


@flow
async def little(n: int) -> int:
    return await work(n)


@flow
async def big(n: int) -> int:
    return 1 + await little(n)


async def test_as_many_parents_as_slots_all_finish(make_runtime: RuntimeFactory) -> None:
    # Every slot is taken by a parent awaiting its child: before, no child
    # could ever run and all of them hung.
    async with make_runtime(flows=[big, little], max_live_runs=2) as rt:
        runs = [await rt.start(big, n) for n in range(4)]
        with anyio.fail_after(10):
            assert [await run.result() for run in runs] == [1, 3, 5, 7]
        assert rt.live_runs == 0
