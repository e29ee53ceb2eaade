"""The flows and checkpoints the benchmarks run (module level, as users write them)."""

from __future__ import annotations

import anyio

from kitaru import checkpoint, flow

__all__ = ("GATE", "Gate", "recoverable", "sequential", "step")


@checkpoint
async def step(i: int) -> int:
    """The trivial checkpoint: all cost is kitaru's."""
    return i


@flow(name="bench_sequential")
async def sequential(n: int) -> int:
    """``n`` trivial checkpoints, one after the other."""
    for i in range(n):
        await step(i)
    return n


class Gate:
    """Makes :func:`gated_step` block forever at one position (to interrupt a run)."""

    def __init__(self) -> None:
        #: Position that blocks; ``None``: nothing blocks.
        self.block_at: int | None = None
        #: Set when the blocking position is reached.
        self.reached: anyio.Event | None = None
        #: Bodies executed (i.e. not replayed from the journal).
        self.live_calls = 0

    def arm(self, block_at: int | None) -> None:
        self.block_at = block_at
        self.reached = anyio.Event() if block_at is not None else None
        self.live_calls = 0


GATE = Gate()


@checkpoint
async def gated_step(i: int) -> int:
    """A trivial checkpoint that blocks at ``GATE.block_at``."""
    GATE.live_calls += 1
    if i == GATE.block_at:
        assert GATE.reached is not None
        GATE.reached.set()
        await anyio.sleep_forever()
    return i


@flow(name="bench_recoverable")
async def recoverable(n: int) -> int:
    """``n`` gated checkpoints; returns their sum."""
    total = 0
    for i in range(n):
        total += await gated_step(i)
    return total
