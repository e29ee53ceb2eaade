"""Helpers for testing code that uses kitaru.

- :func:`always_evict`: runtime settings that evict a flow at every wait and
  sleep, so every suspension exercises rehydration from the journal;
- :class:`FakeClock`: a clock you advance by hand, so timers (sleeps, wait
  timeouts) are tested instantly and exactly.

Example::

    clock = FakeClock()
    async with kitaru.runtime(store="memory://", clock=clock, **always_evict()) as rt:
        run = await rt.start(my_flow)
        clock.advance(3600)   # the flow's one-hour sleep is over
"""

from __future__ import annotations

import time
from typing import Any

import anyio

__all__ = ("FakeClock", "always_evict")


def always_evict() -> dict[str, Any]:
    """Settings for ``kitaru.runtime(...)`` that evict at every wait and sleep."""
    return {"idle_grace": 0.0}


class FakeClock:
    """A clock that only moves when :meth:`advance` is called."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def now(self) -> float:
        """The fake time, in seconds since the epoch."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake everything whose deadline passed."""
        self._now += seconds
        due = [(d, e) for d, e in self._sleepers if d <= self._now]
        self._sleepers = [(d, e) for d, e in self._sleepers if d > self._now]
        for _, event in due:
            event.set()

    async def sleep_until(self, deadline: float, wake: anyio.Event) -> None:
        """Return once :meth:`advance` passes ``deadline`` or ``wake`` is set."""
        if deadline <= self._now:
            return
        self._sleepers.append((deadline, wake))
        try:
            await wake.wait()
        finally:
            self._sleepers = [(d, e) for d, e in self._sleepers if e is not wake]
