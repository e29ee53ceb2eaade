"""A research agent whose every LLM call and step is durable.

Run it (offline unless OPENAI_API_KEY is set; litellm's mock_response stands in):

    python examples/research_agent.py "octopus cognition"

Run it again with the same ``--run-id`` and nothing is recomputed: every step
comes back from the journal in ``./.kitaru/``. Kill it half-way (Ctrl-C or
``kill -9``) and start it again with the same ``--run-id``: finished steps are
not paid for twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable
from typing import Any

import kitaru
from kitaru import checkpoint, flow

# Use litellm's bundled price table instead of fetching it over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
MODEL = os.environ.get("KITARU_EXAMPLE_MODEL", "gpt-4o-mini")


def ask(prompt: str) -> Awaitable[str]:
    """One LLM call through kitaru.llm: recorded once, never re-billed on replay."""
    extra: dict[str, Any] = {}
    if not os.environ.get("OPENAI_API_KEY"):
        extra["mock_response"] = f"[offline answer] {prompt[:70]}"
    # kitaru.llm takes its journal position now, so gathered calls replay in order.
    return kitaru.llm(prompt, model=MODEL, name="ask", **extra)


@checkpoint
def outline(topic: str, notes: str) -> list[str]:
    """Plain ``def`` checkpoints run in a worker thread."""
    return [f"{topic}: background", f"{topic}: open questions", f"{topic}: what to read next"]


@flow
async def research(topic: str) -> str:
    """Take notes, outline, then draft every section concurrently."""
    notes = await ask(f"List three surprising facts about {topic}.")
    sections = await outline(topic, notes)
    # Positions are fixed when the calls are made, so a gather replays in order.
    drafts = await asyncio.gather(*(ask(f"Write one paragraph on {s}.") for s in sections))
    return "\n\n".join([notes, *drafts])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic", nargs="?", default="octopus cognition")
    parser.add_argument("--run-id", default=None, help="resume or re-read this run")
    args = parser.parse_args()

    async with kitaru.runtime() as rt:
        run = await rt.start(research, args.topic, run_id=args.run_id)
        report = await run.result()
        info = await rt.get_run(run.id)

    print(report)
    print()
    print(f"run {info.id}: {info.status}")
    for cp in info.checkpoints:
        print(f"  #{cp.position} {cp.name:<8} {cp.status:<9} {cp.duration_s or 0:.3f}s")
    cost = "unknown" if info.usage.cost_usd is None else f"${info.usage.cost_usd:.6f}"
    print(
        f"usage: {info.usage.input_tokens} input + {info.usage.output_tokens} output tokens, "
        f"cost {cost}"
    )
    print(f"state: {rt.config.store} (artifacts: {rt.config.artifacts})")
    print(f"replay it for free: python examples/research_agent.py --run-id {info.id}")


if __name__ == "__main__":
    asyncio.run(main())
