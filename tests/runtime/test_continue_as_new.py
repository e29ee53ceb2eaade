"""``continue_as_new``: each round is a new generation of the run, with identities of its own.

After the journal starts afresh, positions restart at 0. Message keys and
child run ids are derived from the run's generation too, so a later round
never collides with an earlier one: its sends are not dropped as duplicates
and its child flows are new runs.
"""

from __future__ import annotations

import anyio
import pytest

import kitaru
from kitaru import flow
from kitaru.testing import always_evict
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


@flow
async def collector(count: int) -> list[int]:
    return [await kitaru.wait(int, topic="n", timeout=10) for _ in range(count)]


@flow
async def sender(to: str, round_: int) -> int:
    await kitaru.send(to, round_, topic="n")
    if round_ < 2:
        kitaru.continue_as_new(to, round_ + 1)
    return round_


async def test_each_round_sends_its_own_message(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(flows=[collector, sender]) as rt:
        inbox = await rt.start(collector, 3, run_id="inbox")
        run = await rt.start(sender, "inbox", 0)
        with anyio.fail_after(10):
            assert await run.result() == 2
            assert await inbox.result() == [0, 1, 2]


@flow
async def tens(n: int) -> int:
    return n * 10


@flow
async def rounds_with_children(n: int, seen: list[int]) -> list[int]:
    seen = [*seen, await tens(n)]
    if n < 2:
        kitaru.continue_as_new(n + 1, seen)
    return seen


async def test_each_round_starts_its_own_child_flow(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(flows=[rounds_with_children, tens]) as rt:
        run = await rt.start(rounds_with_children, 0, [])
        with anyio.fail_after(10):
            assert await run.result() == [0, 10, 20]
        children = [r for r in await rt.list_runs(flow="tens") if r.parent_id == run.id]
        assert len(children) == 3


@flow
async def waits_each_round(n: int) -> int:
    await kitaru.wait(str, timeout=30 if n == 0 else 0.5)  # round 1's wait times out
    if n < 1:
        kitaru.continue_as_new(n + 1)
    return n


async def test_a_new_round_does_not_inherit_the_last_rounds_pending_wait(
    make_runtime: RuntimeFactory,
) -> None:
    # Round 0 rehydrates from a wait, then continues: round 1's wait at the same
    # position must use its own timeout, not round 0's recorded deadline.
    async with make_runtime(flows=[waits_each_round], **always_evict()) as rt:
        run = await rt.start(waits_each_round, 0)
        with anyio.fail_after(10):
            while (await rt.get_run(run.id)).status != "waiting":
                await anyio.sleep(0.01)
        await rt.send(run.id, "go")
        with anyio.fail_after(10), pytest.raises(kitaru.FlowFailed, match="WaitTimeout"):
            await run.result()
