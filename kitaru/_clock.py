"""Wall-clock time for durable deadlines, injectable so timer tests are exact.

Deadlines (sleeps, wait timeouts, leases) are wall-clock epochs because they
must mean the same thing in another process or after a restart.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ("Clock", "SystemClock")


class Clock(Protocol):
    """Where the runtime reads the time and waits for deadlines."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float, wake: anyio.Event) -> None:
        """Return at ``deadline`` or as soon as ``wake`` is set, whichever is first."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def sleep_until(self, deadline: float, wake: anyio.Event) -> None:
        """Return at ``deadline`` or when ``wake`` is set."""
        with anyio.move_on_after(max(0.0, deadline - time.time())):
            await wake.wait()
