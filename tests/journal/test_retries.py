"""Retries, backoff and timeouts per checkpoint; failures reach the caller as FlowFailed."""

from __future__ import annotations

import itertools
import time

import anyio
import pytest

import kitaru
from kitaru import Backoff, checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


async def test_retries_until_success_and_records_each_error(rt: kitaru.Runtime) -> None:
    attempts: list[int] = []

    @checkpoint(retries=3, backoff=0)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"try {len(attempts)}")
        return "ok"

    @flow
    async def f() -> str:
        return await flaky()

    run = await rt.start(f)
    assert await run.result() == "ok"
    cp = (await run.info()).checkpoints[0]
    assert cp.status == "completed"
    assert cp.attempts == 3
    assert cp.errors == ["ConnectionError: try 1", "ConnectionError: try 2"]


async def test_exhausted_retries_fail_the_run_with_the_original_error(rt: kitaru.Runtime) -> None:
    @checkpoint(retries=2, backoff=0)
    def broken() -> None:
        raise ValueError("bad input")

    @flow
    async def f() -> None:
        await broken()

    run = await rt.start(f)
    with pytest.raises(kitaru.FlowFailed) as caught:
        await run.result()
    failed = caught.value
    assert isinstance(failed.original, ValueError)
    assert failed.__cause__ is failed.original
    assert failed.error == "ValueError: bad input"
    assert failed.error_type == "builtins.ValueError"
    assert "bad input" in (failed.traceback or "")
    info = await run.info()
    assert info.status == "failed"
    assert info.error == "ValueError: bad input"
    cp = info.checkpoints[0]
    assert (cp.status, cp.attempts) == ("failed", 3)
    assert cp.errors == ["ValueError: bad input"] * 3


async def test_backoff_policies_space_out_attempts(rt: kitaru.Runtime) -> None:
    stamps: list[float] = []

    @checkpoint(retries=2, backoff=Backoff(initial=0.05, factor=2, jitter=0))
    async def flaky() -> None:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise RuntimeError("again")

    @flow
    async def f() -> None:
        await flaky()

    await (await rt.start(f)).result()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095


def test_backoff_delay_is_capped() -> None:
    policy = Backoff(initial=1, factor=10, max=5, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [1, 5, 5]


async def test_timeout_fails_an_attempt_and_is_retried(rt: kitaru.Runtime) -> None:
    attempts: list[int] = []

    @checkpoint(timeout=0.05, retries=1, backoff=lambda n: 0)
    async def slow() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await anyio.sleep(10)
        return "second try"

    @flow
    async def f() -> str:
        return await slow()

    run = await rt.start(f)
    assert await run.result() == "second try"
    assert (await run.info()).checkpoints[0].errors == ["TimeoutError"]


async def test_caught_failure_replays_as_the_same_exception(make_runtime: RuntimeFactory) -> None:
    calls: list[str] = []
    gate = anyio.Event()

    @checkpoint
    def risky() -> None:
        calls.append("risky")
        raise KeyError("missing")

    @checkpoint
    async def hold() -> None:
        await gate.wait()

    @flow(name="catcher")
    async def f() -> str:
        try:
            await risky()
        except KeyError as exc:
            outcome = f"caught {exc.args[0]}"
        await hold()
        return outcome

    async with make_runtime() as rt:
        await rt.start(f, run_id="c")
        with anyio.fail_after(5):
            while not (await rt.get_run("c")).checkpoints:
                await anyio.sleep(0.01)
    gate.set()
    async with make_runtime(flows=[f]) as rt:
        assert await rt.result("c") == "caught missing"
    assert calls == ["risky"]


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="retries"):
        checkpoint(retries=-1)(lambda: None)
    with pytest.raises(ValueError, match="timeout"):
        checkpoint(timeout=0)(lambda: None)
