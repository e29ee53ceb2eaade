"""Human in the loop: a flow that drafts, then waits (for days if need be) for approval.

Terminal 1 starts the flow and hosts it until it finishes:

    python examples/approval.py start "quarterly report"

It prints the run id and the question. Terminal 2 answers (any process with
access to the same ./.kitaru store can):

    python examples/approval.py answer RUN_ID yes

which is this one-liner around ``rt.send``:

    python -c "import asyncio, kitaru
    async def go():
        async with kitaru.runtime() as rt: await rt.send('RUN_ID', True)
    asyncio.run(go())"

Kill terminal 1 while it waits (Ctrl-C, even kill -9) and start it again with
`python examples/approval.py resume RUN_ID`: nothing is lost; the draft is not
redone, and an answer sent meanwhile is waiting in the run's mailbox.

`python examples/approval.py demo` plays both terminals in one process.
"""

from __future__ import annotations

import asyncio
import sys

import kitaru
from kitaru import checkpoint, flow


@checkpoint
async def draft(topic: str) -> str:
    """Stands in for an expensive LLM call."""
    return f"{topic.title()}: revenue up, costs down, morale excellent."


@checkpoint
def publish(text: str) -> str:
    """A side effect that must happen once."""
    return f"published {len(text)} characters"


@flow
async def approval(topic: str) -> str:
    """Draft, wait for a human's yes/no, publish if approved."""
    text = await draft(topic)
    ok = await kitaru.wait(schema=bool, question=f"Publish this?\n{text}")
    if not ok:
        return "rejected"
    return await publish(text)


async def host(run_id: str | None, topic: str) -> None:
    async with kitaru.runtime(flows=[approval]) as rt:
        run = await rt.start(approval, topic, run_id=run_id)
        info = await rt.get_run(run.id)
        while info.status == "running":
            await asyncio.sleep(0.05)
            info = await rt.get_run(run.id)
        if info.pending_wait is not None:
            print(f"run {run.id} is waiting: {info.pending_wait.question}")
            print(f"answer it with: python examples/approval.py answer {run.id} yes")
        print(await run.result())


async def answer(run_id: str, text: str) -> None:
    async with kitaru.runtime() as rt:
        await rt.send(run_id, text.lower() in ("y", "yes", "true", "1"))
    print(f"sent to {run_id}")


async def demo() -> None:
    async with kitaru.runtime(flows=[approval]) as rt:
        run = await rt.start(approval, "quarterly report")
        info = await rt.get_run(run.id)
        while info.pending_wait is None:
            await asyncio.sleep(0.01)
            info = await rt.get_run(run.id)
        print(f"run {run.id} asks: {info.pending_wait.question}")
        await rt.send(run.id, True)
        print(await run.result())
        info = await rt.get_run(run.id)
    print(f"run {info.id}: {info.status}; state: {rt.config.store}")


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or ["demo"]
    if command == "start":
        asyncio.run(host(None, rest[0] if rest else "quarterly report"))
    elif command == "resume":
        asyncio.run(host(rest[0], "quarterly report"))
    elif command == "answer":
        asyncio.run(answer(rest[0], rest[1] if len(rest) > 1 else "yes"))
    else:
        asyncio.run(demo())
