"""Counting and holding a runtime's sweeps (what ``kitaru worker`` does every second).

The lease service calls ``Placement.recover`` to sweep for runs nobody hosts;
tests of ``rt.submit`` count those calls to know when the sweeps a runtime
makes on its own (one when it opens, one when PostgreSQL's listener first
connects) are over, so every pickup they then see comes from their own kick.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import pytest

import kitaru
from kitaru._runtime._placement import Placement


class Sweeps:
    """How many sweeps one runtime has made."""

    count = 0


@contextmanager
def counting_sweeps(rt: kitaru.Runtime) -> Iterator[Sweeps]:
    """Count ``rt``'s sweeps (from before it opens, so the first one counts)."""
    sweeps = Sweeps()
    sweep = Placement.recover

    async def counted(placement: Placement, limit: int = 1000) -> int:
        try:
            return await sweep(placement, limit)
        finally:
            if placement.owner == rt.owner:
                sweeps.count += 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Placement, "recover", counted)
        yield sweeps


@asynccontextmanager
async def held_first_sweep(rt: kitaru.Runtime) -> AsyncIterator[tuple[anyio.Event, anyio.Event]]:
    """Hold the first sweep of open ``rt`` that resumes a run: ``(sweeping, go_on)``.

    ``sweeping`` is set once that sweep has claimed its runs; it returns when
    the test sets ``go_on``.
    """
    sweep = rt.placement.recover
    sweeping = anyio.Event()
    go_on = anyio.Event()

    async def held_sweep(limit: int = 1000) -> int:
        resumed = await sweep(limit)
        if resumed and not sweeping.is_set():
            sweeping.set()
            await go_on.wait()
        return resumed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rt.placement, "recover", held_sweep)
        yield sweeping, go_on
