"""Recorded failures replay as themselves: the same exception class, and a failed send stays failed.

A flow that catches an exception must take the same path when it is
rehydrated from its journal. Each flow below catches a failure, then waits,
so that in always-evict mode its second half runs in a new activation that
replays the failure from the journal.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.testing import always_evict
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

ran: list[str] = []


class QuotaError(Exception):
    """A custom constructor that does not take the message."""

    def __init__(self, code: int) -> None:
        super().__init__(f"quota exceeded ({code})")
        self.code = code


class RetryLater(Exception):
    """A required keyword argument."""

    def __init__(self, message: str, *, after: float) -> None:
        super().__init__(message)
        self.after = after


@checkpoint
async def charge() -> str:
    ran.append("charge")
    raise QuotaError(429)


@checkpoint
async def poll() -> str:
    ran.append("poll")
    raise RetryLater("busy", after=2.5)


@checkpoint
async def lookup() -> str:
    ran.append("lookup")
    raise KeyError({"id": 7})


@flow
async def catches_custom_errors() -> list[Any]:
    seen: list[Any] = []
    try:
        await charge()
    except QuotaError as exc:
        seen.append(exc.code)
    try:
        await poll()
    except RetryLater as exc:
        seen.append(exc.after)
    try:
        await lookup()
    except KeyError as exc:
        seen.append(exc.args[0])
    seen.append(await kitaru.wait(str))
    return seen


async def until_status(rt: kitaru.Runtime, run_id: str, status: str) -> None:
    with anyio.fail_after(10):
        while (await rt.get_run(run_id)).status != status:
            await anyio.sleep(0.01)


async def test_custom_exceptions_are_rebuilt_on_replay(make_runtime: RuntimeFactory) -> None:
    ran.clear()
    async with make_runtime(flows=[catches_custom_errors], **always_evict()) as rt:
        run = await rt.start(catches_custom_errors)
        await until_status(rt, run.id, "waiting")
        with anyio.fail_after(10):
            while rt.is_live(run.id):
                await anyio.sleep(0.01)
        await rt.send(run.id, "done")
        # The rehydrated flow caught the same classes, with their attributes.
        assert await run.result() == [429, 2.5, {"id": 7}, "done"]
    assert ran == ["charge", "poll", "lookup"]  # no body ran twice


@flow
async def greeter() -> str:
    return await kitaru.wait(str, topic="hello", timeout=1)


@flow
async def sends_to_a_missing_peer() -> str:
    try:
        await kitaru.send("peer-run", "hi", topic="hello")
        path = "sent"
    except kitaru.RunNotFound:
        path = "missing"
    await kitaru.wait(str)
    return path


async def test_a_failed_send_replays_as_failed(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(flows=[sends_to_a_missing_peer, greeter], **always_evict()) as rt:
        run = await rt.start(sends_to_a_missing_peer)
        await until_status(rt, run.id, "waiting")
        # The peer exists now: a replay that sent for real would reach it.
        peer = await rt.start(greeter, run_id="peer-run")
        await until_status(rt, peer.id, "waiting")
        await rt.send(run.id, "go on")
        assert await run.result() == "missing"
        info = await rt.get_run(run.id)
        send = next(c for c in info.checkpoints if c.kind == "send")
        assert send.status == "failed"
        assert send.metadata == {"to": "peer-run"}
        with pytest.raises(kitaru.FlowFailed, match="WaitTimeout"):
            await peer.result()  # it never got the message
