"""A PydanticAI support agent made durable with KitaruAgent.

    pip install 'kitaru[pydantic-ai]'
    python examples/pydantic_ai_agent.py "Where is order 1042?"

Every model request of the agent is recorded as an ``llm`` call (tokens and
cost on the run, counted against its budget) and every tool call as a
checkpoint. Run it again with the same ``--run-id`` and nothing is called
again: the agent re-runs over its recorded responses. Offline unless
OPENAI_API_KEY is set: a PydanticAI FunctionModel then plays the model (it
looks the order up, then answers from the tool's result).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

import kitaru
from kitaru.integrations.pydantic_ai import KitaruAgent

ORDERS = {"1042": {"status": "shipped", "carrier": "DHL", "eta": "Thursday"}}


def offline_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Plays the model without a network: look the order up, then answer from the result."""
    returns = [p for p in getattr(messages[-1], "parts", []) if isinstance(p, ToolReturnPart)]
    if not returns:
        return ModelResponse(parts=[ToolCallPart("order_status", {"order_id": "1042"})])
    order = returns[0].content
    return ModelResponse(
        parts=[
            TextPart(
                f"Order 1042 is {order['status']} with {order['carrier']}, arriving {order['eta']}."
            )
        ]
    )


model: Any = (
    "openai:gpt-4o-mini" if os.environ.get("OPENAI_API_KEY") else FunctionModel(offline_model)
)
agent = Agent(
    model,
    name="support",
    instructions="You answer questions about orders. Look orders up with order_status.",
)


@agent.tool_plain
def order_status(order_id: str) -> dict[str, str]:
    """The status of an order (a checkpoint in a flow: looked up once per run)."""
    print(f"  (looking up order {order_id})")
    return ORDERS.get(order_id, {"status": "unknown", "carrier": "-", "eta": "-"})


durable = KitaruAgent(agent)


@kitaru.flow(budget=kitaru.Budget(tokens=20_000))
async def support(question: str) -> str:
    """Answer a customer's question with the agent; every step is durable."""
    result = await durable.run(question)
    return str(result.output)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="Where is order 1042?")
    parser.add_argument("--run-id", default=None, help="resume or re-read this run")
    args = parser.parse_args()

    async with kitaru.runtime() as rt:
        run = await rt.start(support, args.question, run_id=args.run_id)
        answer = await run.result()
        info = await rt.get_run(run.id)

    print(answer)
    print()
    print(f"run {info.id}: {info.status}")
    for cp in info.checkpoints:
        print(f"  #{cp.position} {cp.kind:<10} {cp.name:<26} {cp.status}")
    cost = "unknown" if info.usage.cost_usd is None else f"${info.usage.cost_usd:.6f}"
    print(f"usage: {info.usage.input_tokens} in + {info.usage.output_tokens} out tokens, {cost}")
    print(f"replay it for free: python examples/pydantic_ai_agent.py --run-id {info.id}")


if __name__ == "__main__":
    asyncio.run(main())
