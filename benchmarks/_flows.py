"""The flows and checkpoints the benchmarks run (module level, as users write them)."""

from __future__ import annotations

import time

import anyio

import kitaru
from kitaru import checkpoint, flow

__all__ = (
    "COLD_CHECKPOINTS",
    "GATE",
    "SINK",
    "Gate",
    "Sink",
    "cold_waiter",
    "echo",
    "recoverable",
    "sequential",
    "step",
    "waiter",
)


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


# -- waits --------------------------------------------------------------------------


@flow(name="bench_waiter")
async def waiter() -> str:
    """Two trivial checkpoints, then wait for one message: a run parked on a person."""
    await step(0)
    await step(1)
    return await kitaru.wait(str)


class Sink:
    """Latencies measured inside flows: seconds from a ``perf_counter`` sent as the message."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        #: Set when the next sample arrives (``arm`` replaces it).
        self.arrived = anyio.Event()

    def arm(self) -> None:
        self.arrived = anyio.Event()

    def record(self, sent: float) -> None:
        self.samples.append(time.perf_counter() - sent)
        self.arrived.set()


SINK = Sink()

#: Checkpoints the cold-wake flow records before it waits.
COLD_CHECKPOINTS = 20


@flow(name="bench_echo")
async def echo(rounds: int) -> int:
    """Wait ``rounds`` times for a ``perf_counter`` timestamp; record each wake's latency."""
    for _ in range(rounds):
        SINK.record(await kitaru.wait(float))
    return rounds


@flow(name="bench_cold_waiter")
async def cold_waiter() -> int:
    """``COLD_CHECKPOINTS`` checkpoints, then one wait whose wake latency is recorded."""
    for i in range(COLD_CHECKPOINTS):
        await step(i)
    SINK.record(await kitaru.wait(float))
    return COLD_CHECKPOINTS
