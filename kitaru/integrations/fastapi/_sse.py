"""Server-sent events on the wire: ``id:``, ``event:``, ``data:`` frames and keep-alives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from .events import RunEvent

__all__ = ("HEADERS", "frame", "frames")

#: Response headers of an event stream (no caching, no proxy buffering).
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

#: How long a disconnected browser waits before reconnecting (milliseconds).
RETRY_MS = 2000


def frame(event: RunEvent | None) -> bytes:
    """One event as SSE text; ``None`` is a comment that keeps the connection alive."""
    if event is None:
        return b": keep-alive\n\n"
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    head = f"id: {event.id}\n" if event.id else ""
    return f"{head}event: {event.type}\ndata: {data}\n\n".encode()


async def frames(events: AsyncIterator[RunEvent | None]) -> AsyncIterator[bytes]:
    """The stream's bytes: a ``retry:`` hint, then ``events``."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    async for event in events:
        yield frame(event)
