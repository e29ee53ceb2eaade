"""Two agents that talk through their mailboxes until the critic approves.

    python examples/writer_critic.py "durable agents"

The writer drafts, sends the draft to the critic's run, and waits for a
verdict; the critic waits for drafts, reviews each, and replies to whoever sent
it. Each LLM call is a checkpoint, each send is journaled (a replayed agent
never sends twice), and an agent waiting for the other costs no memory once it
is evicted. Offline unless OPENAI_API_KEY is set (litellm's mock_response).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pydantic

import kitaru
from kitaru import checkpoint, flow

MODEL = os.environ.get("KITARU_EXAMPLE_MODEL", "gpt-4o-mini")


class Verdict(pydantic.BaseModel):
    approved: bool
    notes: str


@checkpoint(retries=2)
async def llm(prompt: str, offline_answer: str) -> str:
    """One model call; recorded once per run."""
    # Use litellm's bundled price table instead of fetching it over the network.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    extra: dict[str, Any] = {}
    if not os.environ.get("OPENAI_API_KEY"):
        extra["mock_response"] = offline_answer
    response = await litellm.acompletion(
        model=MODEL, messages=[{"role": "user", "content": prompt}], **extra
    )
    return str(response.choices[0].message.content)


@flow
async def writer(topic: str, critic_id: str, max_rounds: int = 5) -> str:
    """Draft, ask the critic, revise until approved."""
    notes = "none yet"
    for round_no in range(1, max_rounds + 1):
        draft = await llm(
            f"Write a short paragraph about {topic}. Address these notes: {notes}",
            f"Draft {round_no} about {topic} (addressing: {notes}).",
        )
        await kitaru.send(critic_id, draft, topic="drafts")
        verdict = await kitaru.wait(Verdict, topic="verdicts", question="critic's verdict")
        if verdict.approved:
            await kitaru.send(critic_id, "", topic="done")
            return draft
        notes = verdict.notes
    return f"gave up after {max_rounds} rounds"


@flow
async def critic(bar: int = 3) -> int:
    """Review drafts as they come; approve the one that reaches the bar."""
    reviewed = 0
    while True:
        msg = await kitaru.receive(str, topic="drafts")
        reviewed += 1
        approved = reviewed >= bar
        notes = await llm(
            f"Critique this draft in one sentence:\n{msg.value}",
            "Looks good." if approved else f"Be more concrete (review {reviewed}).",
        )
        assert msg.sender is not None
        await kitaru.send(msg.sender, Verdict(approved=approved, notes=notes), topic="verdicts")
        if approved:
            await kitaru.wait(str, topic="done")
            return reviewed


async def main(topic: str) -> None:
    async with kitaru.runtime() as rt:
        critic_run = await rt.start(critic, 3)
        writer_run = await rt.start(writer, topic, critic_run.id)
        final = await writer_run.result()
        rounds = await critic_run.result()
        info = await rt.get_run(writer_run.id)
    print(f"approved after {rounds} reviews:\n  {final}\n")
    print(f"writer run {info.id}: {info.status}")
    for cp in info.checkpoints:
        print(f"  #{cp.position:<2} {cp.kind:<10} {cp.name:<8} {cp.status}")
    print(f"state: {rt.config.store}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "durable agents"))
