"""The approval flow most tests share: draft a text, wait for a yes/no, publish if approved.

Importable by worker subprocesses too (the CLI and API tests put the
repository on their ``PYTHONPATH``). ``DRAFTED`` lists the topics ``draft``
really ran for in this process, so a test can check that a rehydrated flow
did not run its checkpoint again.
"""

from __future__ import annotations

import kitaru
from kitaru import checkpoint, flow

DRAFTED: list[str] = []


@checkpoint
async def draft(topic: str) -> str:
    DRAFTED.append(topic)
    return f"draft about {topic}"


@checkpoint
def publish(text: str) -> str:
    return f"published: {text}"


@flow
async def approval(topic: str) -> str:
    """Draft a text, ask a person whether to publish it, publish if approved."""
    text = await draft(topic)
    ok = await kitaru.wait(schema=bool, question=f"Publish this?\n{text}")
    if not ok:
        return "rejected"
    return await publish(text)
