"""Checkpoints inside flows: recorded once, returned from the journal afterwards."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

import kitaru
from kitaru import checkpoint, flow

pytestmark = pytest.mark.anyio


class Counter:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def hit(self, name: str) -> None:
        self.calls.append(name)


async def test_flow_runs_checkpoints_and_records_them(rt: kitaru.Runtime) -> None:
    seen = Counter()

    @checkpoint
    async def research(topic: str) -> str:
        seen.hit("research")
        return f"notes on {topic}"

    @checkpoint
    def write_draft(topic: str, notes: str) -> str:
        seen.hit("draft")
        return f"{topic}: {notes}"

    @flow
    async def writer(topic: str) -> str:
        notes = await research(topic)
        return await write_draft(topic, notes)

    run = await rt.start(writer, "cats")
    assert await run.result() == "cats: notes on cats"
    info = await run.info()
    assert info.status == "completed"
    assert info.input == {"topic": "cats"}
    assert info.output == "cats: notes on cats"
    assert [(c.position, c.name, c.kind, c.status, c.attempts) for c in info.checkpoints] == [
        (0, "research", "checkpoint", "completed", 1),
        (1, "write_draft", "checkpoint", "completed", 1),
    ]
    assert all(c.duration_s is not None and c.duration_s >= 0 for c in info.checkpoints)
    assert seen.calls == ["research", "draft"]


async def test_sync_checkpoint_runs_in_a_worker_thread(rt: kitaru.Runtime) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    @checkpoint
    def blocking() -> int:
        threads.append(threading.get_ident())
        return 7

    @flow
    async def f() -> int:
        return await blocking()

    assert await (await rt.start(f)).result() == 7
    assert threads and threads[0] != loop_thread


async def test_sync_flow_with_sync_and_async_checkpoints(rt: kitaru.Runtime) -> None:
    @checkpoint
    def double(x: int) -> int:
        return 2 * x

    @checkpoint
    async def inc(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x + 1

    @flow
    def plain(x: int) -> int:
        return inc(double(x))  # type: ignore[no-any-return]

    run = await rt.start(plain, 5)
    assert await run.result() == 11
    assert [c.name for c in (await run.info()).checkpoints] == ["double", "inc"]


async def test_checkpoint_outside_a_flow_just_runs() -> None:
    @checkpoint
    def add(a: int, b: int) -> int:
        return a + b

    @checkpoint
    async def aadd(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert await aadd(1, 2) == 3


async def test_nested_checkpoint_inside_a_checkpoint_is_not_journaled(rt: kitaru.Runtime) -> None:
    @checkpoint
    async def inner() -> int:
        return 1

    @checkpoint
    async def outer() -> int:
        return await inner() + 1

    @flow
    async def f() -> int:
        return await outer()

    run = await rt.start(f)
    assert await run.result() == 2
    assert [c.name for c in (await run.info()).checkpoints] == ["outer"]


async def test_checkpoint_on_a_method(rt: kitaru.Runtime) -> None:
    class Agent:
        def __init__(self, greeting: str) -> None:
            self.greeting = greeting

        @checkpoint
        async def greet(self, name: str) -> str:
            return f"{self.greeting}, {name}"

    agent = Agent("hello")

    @flow
    async def f(name: str) -> str:
        return await agent.greet(name)

    assert await (await rt.start(f, "ada")).result() == "hello, ada"


async def test_checkpoint_options_and_name(rt: kitaru.Runtime) -> None:
    @checkpoint(name="fetch")
    async def get() -> str:
        return "x"

    @flow(name="custom")
    async def f() -> str:
        return await get()

    run = await rt.start(f)
    await run.result()
    info = await run.info()
    assert info.flow == "custom"
    assert info.checkpoints[0].name == "fetch"
