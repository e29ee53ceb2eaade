"""kitaru.wait / send / receive: mailboxes with exactly-once, in-order consumption."""

from __future__ import annotations

import datetime as dt

import anyio
import pydantic
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.testing import FakeClock
from tests.approval_flow import DRAFTED, approval
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


async def until_status(rt: kitaru.Runtime, run_id: str, status: str) -> kitaru.RunInfo:
    with anyio.fail_after(5):
        while True:
            info = await rt.get_run(run_id)
            if info.status == status:
                return info
            await anyio.sleep(0.005)


async def test_wait_is_visible_and_answered_by_send(rt: kitaru.Runtime) -> None:
    DRAFTED.clear()
    run = await rt.start(approval, "cats")
    info = await until_status(rt, run.id, "waiting")
    wait = info.pending_wait
    assert wait is not None
    question = "Publish this?\ndraft about cats"
    assert (wait.topic, wait.question, wait.deadline) == ("input", question, None)
    assert wait.schema == {"type": "boolean"}
    assert [r.id for r in await rt.list_runs(status="waiting")] == [run.id]
    await rt.send(run.id, True)
    assert await run.result() == "published: draft about cats"
    assert DRAFTED == ["cats"]  # a rehydrated flow did not redo its checkpoint
    info = await run.info()
    assert info.pending_wait is None
    assert [(c.kind, c.name) for c in info.checkpoints] == [
        ("checkpoint", "draft"),
        ("wait", "input"),
        ("checkpoint", "publish"),
    ]


async def test_invalid_message_is_rejected_and_nothing_is_consumed(rt: kitaru.Runtime) -> None:
    run = await rt.start(approval, "dogs")
    await until_status(rt, run.id, "waiting")
    with pytest.raises(kitaru.InvalidMessage, match="is not of type 'boolean'"):
        await rt.send(run.id, "yes please")
    assert (await rt.get_run(run.id)).status == "waiting"
    await rt.send(run.id, False)
    assert await run.result() == "rejected"
    with pytest.raises(kitaru.RunFinished, match="completed"):
        await rt.send(run.id, True)
    with pytest.raises(kitaru.RunNotFound):
        await rt.send("no-such-run", True)


class Review(pydantic.BaseModel):
    score: int
    notes: str = ""


@flow
async def collect(n: int) -> list[int]:
    return [(await kitaru.wait(Review, topic="reviews")).score for _ in range(n)]


async def test_early_messages_are_kept_and_consumed_in_order(rt: kitaru.Runtime) -> None:
    run = await rt.start(collect, 3)
    for score in (1, 2, 3):  # may arrive before the flow waits: kept, in order
        await rt.send(run.id, {"score": score}, topic="reviews")
    assert await run.result() == [1, 2, 3]


async def test_idempotency_key_delivers_once(rt: kitaru.Runtime) -> None:
    run = await rt.start(collect, 2)
    first = await rt.send(run.id, {"score": 7}, topic="reviews", key="webhook-1")
    again = await rt.send(run.id, {"score": 7}, topic="reviews", key="webhook-1")
    assert first == again
    await rt.send(run.id, {"score": 8}, topic="reviews", key="webhook-2")
    assert await run.result() == [7, 8]


async def test_wait_timeout_raises_inside_the_flow(make_runtime: RuntimeFactory) -> None:
    @flow
    async def impatient() -> str:
        try:
            await kitaru.wait(str, timeout=dt.timedelta(seconds=30))
        except kitaru.WaitTimeout:
            return "timed out"
        return "answered"

    # A fake clock, so the wait is seen pending however slow the machine is.
    clock = FakeClock()
    async with make_runtime(clock=clock) as rt:
        run = await rt.start(impatient)
        info = await until_status(rt, run.id, "waiting")
        assert info.pending_wait is not None
        assert info.pending_wait.deadline is not None
        clock.advance(31)
        assert await run.result() == "timed out"
        (entry,) = (await run.info()).checkpoints
        assert (entry.kind, entry.status) == ("wait", "failed")


@flow
async def pinger(peer: str, rounds: int) -> list[str]:
    heard = []
    for i in range(rounds):
        await kitaru.send(peer, f"ping {i}")
        msg = await kitaru.receive(str, topic="pong")
        heard.append(f"{msg.value} from {msg.sender}")
    return heard


@flow
async def ponger(rounds: int) -> int:
    for _ in range(rounds):
        msg = await kitaru.receive(str)
        assert msg.sender is not None
        await kitaru.send(msg.sender, msg.value.replace("ping", "pong"), topic="pong")
    return rounds


async def test_agents_talk_through_mailboxes(rt: kitaru.Runtime) -> None:
    b = await rt.start(ponger, 3, run_id="pong-agent")
    a = await rt.start(pinger, "pong-agent", 3, run_id="ping-agent")
    assert await a.result() == [f"pong {i} from pong-agent" for i in range(3)]
    assert await b.result() == 3
    sends = [c for c in (await a.info()).checkpoints if c.kind == "send"]
    assert len(sends) == 3
    assert sends[0].metadata["to"] == "pong-agent"


async def test_send_inside_a_flow_is_not_repeated_on_replay(make_runtime: RuntimeFactory) -> None:
    @flow(name="relay")
    async def relay(target: str) -> None:
        await kitaru.send(target, "hello")
        await kitaru.wait(bool, topic="go")

    async with make_runtime() as rt:
        sink = await rt.start(collect_strings, 5, run_id="sink")
        await rt.start(relay, "sink", run_id="relay")
        await until_status(rt, "relay", "waiting")
    async with make_runtime(flows=[relay, collect_strings]) as rt:
        await rt.send("relay", True, topic="go")
        await rt.result("relay")
        await rt.send("sink", "bye")
        for word in ("a", "b", "c"):
            await rt.send("sink", word)
        assert await rt.result(sink.id) == ["hello", "bye", "a", "b", "c"]


@flow
async def collect_strings(n: int) -> list[str]:
    return [await kitaru.wait(str) for _ in range(n)]


async def test_wait_outside_a_flow_is_a_clear_error() -> None:
    with pytest.raises(kitaru.NotInFlow, match=r"kitaru.wait\(\) was called outside a flow"):
        kitaru.wait(bool)
    with pytest.raises(kitaru.NotInFlow, match="sleep"):
        kitaru.sleep(1)
    with pytest.raises(kitaru.NotInFlow, match="no runtime open"):
        kitaru.send("run", 1)

    @checkpoint
    async def inside() -> None:
        kitaru.wait(bool)

    @flow
    async def f() -> None:
        await inside()

    async with kitaru.runtime(store="memory://") as rt:
        run = await rt.start(f)
        with pytest.raises(kitaru.FlowFailed) as caught:
            await run.result()
    assert isinstance(caught.value.original, kitaru.NotInFlow)
    assert "inside a @checkpoint body" in str(caught.value.original)


async def test_sync_flow_waits_and_sleeps(rt: kitaru.Runtime) -> None:
    @flow
    def sync_approval(topic: str) -> str:
        ok = kitaru.wait(bool, question="ok?")
        kitaru.sleep(0.01)
        return topic if ok else "no"

    run = await rt.start(sync_approval, "sync")
    await until_status(rt, run.id, "waiting")
    await rt.send(run.id, True)
    assert await run.result() == "sync"


async def test_cancel_a_waiting_run(rt: kitaru.Runtime) -> None:
    run = await rt.start(approval, "cancel me")
    await until_status(rt, run.id, "waiting")
    assert await rt.cancel(run.id)
    with pytest.raises(kitaru.FlowCancelled):
        await run.result()
    info = await rt.get_run(run.id)
    assert info.status == "cancelled"
    assert info.pending_wait is None


async def test_continue_as_new_keeps_the_id_and_empties_the_journal(rt: kitaru.Runtime) -> None:
    @checkpoint
    async def work(i: int) -> int:
        return i

    @flow
    async def looper(i: int, total: int) -> int:
        total += await work(i)
        if i < 4:
            kitaru.continue_as_new(i + 1, total)
        return total

    run = await rt.start(looper, 0, 0, run_id="loop")
    assert await run.result() == 0 + 1 + 2 + 3 + 4
    info = await run.info()
    assert info.input == {"i": 4, "total": 6}
    assert len(info.checkpoints) == 1
