"""rt.retry resumes the run from where it really failed: re-raised failures, failed child flows."""

from __future__ import annotations

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

fixed: set[str] = set()
audits: list[str] = []


class PaymentError(Exception):
    pass


@checkpoint
async def pay(amount: int) -> str:
    if "pay" not in fixed:
        raise PaymentError(f"card declined for {amount}")
    return f"paid {amount}"


@checkpoint
async def audit(what: str) -> None:
    audits.append(what)


@flow
async def checkout(amount: int) -> str:
    try:
        return await pay(amount)
    except PaymentError:
        await audit("declined")  # one durable cleanup call, then the same failure
        raise


async def test_a_failure_re_raised_after_a_cleanup_call_is_retried(
    make_runtime: RuntimeFactory,
) -> None:
    fixed.clear()
    audits.clear()
    async with make_runtime(flows=[checkout]) as rt:
        run = await rt.start(checkout, 5)
        with pytest.raises(kitaru.FlowFailed, match="card declined"):
            await run.result()
        fixed.add("pay")
        await rt.retry(run.id)
        with anyio.fail_after(10):
            assert await run.result() == "paid 5"
    assert audits == ["declined"]  # the cleanup is recorded: not run again


@checkpoint
async def fragile_step() -> int:
    if "child" not in fixed:
        raise RuntimeError("not yet")
    return 7


@flow
async def child_flow() -> int:
    return await fragile_step()


@flow
async def parent_flow() -> int:
    return 1 + await child_flow()


async def test_retrying_the_parent_after_its_child_was_retried(
    make_runtime: RuntimeFactory,
) -> None:
    fixed.clear()
    async with make_runtime(flows=[parent_flow, child_flow]) as rt:
        parent = await rt.start(parent_flow)
        with pytest.raises(kitaru.FlowFailed):
            await parent.result()
        child_id = f"{parent.id}.0"
        fixed.add("child")
        child = await rt.retry(child_id)  # the message tells users to do this
        with anyio.fail_after(10):
            assert await child.result() == 7
        await rt.retry(parent.id)
        with anyio.fail_after(10):
            assert await parent.result() == 8
