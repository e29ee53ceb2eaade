"""Helpers for testing code that uses kitaru.

- :func:`always_evict`: runtime settings that evict a flow at every wait and
  sleep, so every suspension exercises rehydration from the journal;
- :class:`FakeClock`: a clock you advance by hand, so timers (sleeps, wait
  timeouts) are tested instantly and exactly;
- :func:`forbid_real_llm_calls`: any LLM call that would reach a real
  provider (``kitaru.llm`` or ``litellm.(a)completion`` without
  ``mock_response``, a PydanticAI model other than its test models) fails at
  once, and again loudly when the block ends.

Example::

    clock = FakeClock()
    async with kitaru.runtime(store="memory://", clock=clock, **always_evict()) as rt:
        run = await rt.start(my_flow)
        clock.advance(3600)   # the flow's one-hour sleep is over

and, in a ``conftest.py``::

    @pytest.fixture(autouse=True)
    def _no_real_llm_calls():
        with forbid_real_llm_calls():
            yield
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from ._llm._guard import LLMGuard, RealLLMCallForbidden, guard

__all__ = (
    "FakeClock",
    "LLMGuard",
    "RealLLMCallForbidden",
    "always_evict",
    "forbid_real_llm_calls",
)


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


@contextmanager
def forbid_real_llm_calls() -> Iterator[LLMGuard]:
    """Make every LLM call that would reach a real provider fail, loudly.

    While the block runs, ``kitaru.llm`` and ``litellm.completion`` /
    ``litellm.acompletion`` calls without ``mock_response`` raise
    :class:`RealLLMCallForbidden` (calls routed to a custom litellm provider,
    which runs in this process, are allowed), and PydanticAI's
    ``ALLOW_MODEL_REQUESTS`` is off when PydanticAI is imported (its
    ``TestModel`` and ``FunctionModel`` still work). A flow may catch that
    error, so the block also raises ``AssertionError`` at its end listing every
    call it stopped. Blocks nest; the innermost one collects the calls.
    """
    active, end = guard()
    try:
        yield active
    finally:
        end()
    if active.violations:
        raise AssertionError(
            "real LLM calls were attempted in a test:\n  " + "\n  ".join(active.violations)
        )
