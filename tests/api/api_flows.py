"""Flows the HTTP API tests host (importable by a worker process too)."""

from __future__ import annotations

import anyio
from pydantic import BaseModel

import kitaru
from kitaru import checkpoint, flow
from tests.approval_flow import approval, draft


class Review(BaseModel):
    approved: bool
    score: int
    comment: str | None = None


@flow
async def review(title: str, reviewers: int = 1) -> dict[str, object]:
    """Collect a structured review."""
    await draft(title)
    answer = await kitaru.wait(schema=Review, question=f"Review {title!r}")
    return {"title": title, "approved": answer.approved, "score": answer.score}


attempts: list[int] = []


@checkpoint
async def flaky(n: int) -> int:
    attempts.append(n)
    if len(attempts) == 1:
        raise ValueError("first call fails")
    return n * 2


@flow
async def fragile(n: int) -> int:
    """Fails on its first execution; a retry succeeds."""
    return await flaky(n)


@flow
async def counter(steps: int) -> int:
    """``steps`` checkpoints, then done."""
    total = 0
    for i in range(steps):
        total += await double(i)
    return total


@checkpoint
async def double(i: int) -> int:
    return 2 * i


searches: list[str] = []


@checkpoint(retries=1, backoff=0.01)
async def research(topic: str) -> list[str]:
    searches.append(topic)
    kitaru.log(engine="web", sources=3)
    if len(searches) % 2 == 1:
        raise TimeoutError("search service timed out")  # the retry succeeds
    return [f"{topic}: survey", f"{topic}: case study", f"{topic}: benchmarks"]


@checkpoint
async def write_draft(topic: str, notes: list[str]) -> str:
    await anyio.sleep(0.05)
    text = f"{topic}. Drawing on {len(notes)} sources, this draft argues one point."
    kitaru.log(words=len(text.split()))
    return text


@flow
async def editorial(title: str) -> dict[str, object]:
    """Research a topic, draft an article, and ask an editor to review it."""
    notes = await research(title)
    text = await write_draft(title, notes)
    answer = await kitaru.wait(schema=Review, question=f"Review this draft:\n\n{text}")
    return {"title": title, "approved": answer.approved, "score": answer.score}


FLOWS = [approval, review, fragile, counter, editorial]
