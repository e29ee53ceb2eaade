"""Flows the CLI tests inspect and steer; also a script that starts one and exits.

``python cli_agents.py STORE ARTIFACTS start FLOW RUN_ID [ARG...]`` starts a run,
waits until it is suspended (or finished), prints its status and exits while
the run waits: the situation ``kitaru send`` and ``kitaru worker`` finish.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import kitaru
from kitaru import checkpoint, flow
from tests.approval_flow import approval


@checkpoint
async def hello(name: str) -> str:
    return f"hello {name}"


@flow
async def greet(name: str) -> str:
    words = await hello(name)
    return f"{words}!"


@checkpoint
async def measure(topic: str) -> int:
    kitaru.log(source="web", chars=len(topic))
    return len(topic)


@flow
async def report(topic: str) -> int:
    kitaru.log(requested_by="cli-test")
    n = await measure(topic)
    await kitaru.save("summary", {"topic": topic, "n": n})
    return n


@checkpoint
async def explode(reason: str) -> str:
    raise ValueError(f"exploded: {reason}")


@flow
async def boom(reason: str) -> str:
    return await explode(reason)




@flow
async def listener() -> str:
    name = await kitaru.wait(str, question="Your name?")
    return f"hi {name}"


@checkpoint
async def fragile(x: int) -> int:
    # Fails until a file named "fixed" exists in the working folder: the
    # "fix the cause, then retry" situation.
    if not Path("fixed").exists():
        raise RuntimeError("not fixed yet")
    return x * 10


@flow
async def flaky(x: int) -> int:
    first = await hello("flaky")
    return len(first) + await fragile(x)


FLOWS = {f.name: f for f in (greet, report, boom, approval, listener, flaky)}


async def _start(store: str, artifacts: str, name: str, run_id: str, *args: str) -> None:
    values = [int(a) if a.isdigit() else a for a in args]
    async with kitaru.runtime(store=store, artifacts=artifacts, flows=[FLOWS[name]]) as rt:
        await rt.start(FLOWS[name], *values, run_id=run_id)
        with anyio.fail_after(20):
            while (info := await rt.get_run(run_id)).status == "running":
                await anyio.sleep(0.01)
        print(info.status.value, flush=True)


if __name__ == "__main__":
    store, artifacts, command, name, run_id, *rest = sys.argv[1:]
    assert command == "start", command
    anyio.run(_start, store, artifacts, name, run_id, *rest)
