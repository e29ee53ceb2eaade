"""Benchmarks of waiting runs: memory per parked run, message throughput, wake latency.

Unlike the benchmarks in ``_cases``, each of these is one large measurement
(thousands of runs, hundreds of latency samples), not a median of repetitions:
``--reps`` does not apply and sizes are the same with ``--quick``, except that
``waiting-100k`` is left out of ``--quick`` unless named with ``--only``.

The parking phases (waiting-10k, waiting-100k) run in a fresh interpreter,
``python -m benchmarks._waiting NAME RUNS BATCH SENDERS``, which prints the
phase as JSON: RSS growth then does not depend on what ran before in the pass.
With ``--profile`` they run in this process instead.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

import kitaru

from ._flows import COLD_CHECKPOINTS, SINK, cold_waiter, echo, waiter
from ._harness import REPO_ROOT, Context, Result, Target, median, scratch_dir, sqlite_url

__all__ = ("bench_cold_wake", "bench_hot_wake", "bench_waiting_100k", "bench_waiting_10k")

MS = 1e3
KIB = 1024
MIB = 1024 * 1024

WAITING_RUNS = 10_000
MANY_WAITING_RUNS = 100_000
#: Runs parked, woken and finished before the memory baseline is read.
WARMUP_RUNS = 100
#: Tasks calling ``rt.start`` at once while runs are parked.
STARTERS = 20
#: waiting-100k starts its runs in batches of this many (each parked before the next).
BATCH = 10_000
#: Sender tasks of the concurrent delivery.
SENDERS = 100
#: Seconds a parked run stays resident before eviction (waiting-10k/100k).
IDLE_GRACE = 0.05
HOT_ROUNDS = 500
HOT_WARMUP = 20
COLD_SAMPLES = 200
COLD_WARMUP = 10
ROW_10K = "8 waiting-10k (SQLite)"
ROW_100K = "9 waiting-100k (SQLite)"


def _runtime(
    store: str, folder: Path, flows: Sequence[kitaru.Flow[Any, Any]], **settings: Any
) -> kitaru.Runtime:
    return kitaru.runtime(store=store, artifacts=str(folder / "artifacts"), flows=flows, **settings)


def _proc_status(key: str) -> int | None:
    """A size from ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(slots=True)
class _Memory:
    """RSS and Python's allocated blocks, read after a garbage collection."""

    rss: int | None
    peak_rss: int | None
    blocks: int

    @classmethod
    def read(cls) -> _Memory:
        gc.collect()
        return cls(_proc_status("VmRSS"), _proc_status("VmHWM"), sys.getallocatedblocks())


def _growth(before: _Memory, after: _Memory) -> float:
    if before.rss is None or after.rss is None:
        return math.nan
    return float(after.rss - before.rss)


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


async def _until(condition: Callable[[], bool], interval: float = 0.01) -> None:
    while True:
        if condition():
            return
        await anyio.sleep(interval)


def _status_counts(path: Path) -> dict[str, int]:
    """Runs per status in the store file; ``waiting_released``: waiting with no owner."""
    conn = sqlite3.connect(path)
    try:
        counts = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        (released,) = conn.execute(
            "SELECT count(*) FROM runs WHERE status = 'waiting' AND owner IS NULL"
        ).fetchone()
    finally:
        conn.close()
    return {**counts, "waiting_released": released}


def _waiting_ids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM runs WHERE status = 'waiting'")]
    finally:
        conn.close()


# -- parking and waking many runs ----------------------------------------------------


@dataclass(slots=True)
class _Parked:
    runs: int
    seconds: float
    #: Evictions during the parking (one per run when all went well).
    evicted: int
    #: Actors still in memory at the end (0 when all went well).
    live: int
    complete: bool


async def _start_many(rt: kitaru.Runtime, count: int, starters: int) -> None:
    left = iter(range(count))

    async def starter() -> None:
        for _ in left:
            await rt.start(waiter)  # the handle is dropped: ids are read back from the store

    async with anyio.create_task_group() as tg:
        for _ in range(min(starters, count)):
            tg.start_soon(starter)


async def _park(rt: kitaru.Runtime, n: int, *, batch: int, limit_s: float) -> _Parked:
    """Start ``n`` waiter runs in batches; return once all are waiting and evicted.

    Gives up after ``limit_s`` seconds (``complete`` is then False).
    """
    supervisor = rt.supervisor
    base = supervisor.evictions
    started = 0
    complete = False

    def parked() -> bool:
        return supervisor.evictions - base >= started and rt.live_runs == 0

    start = time.perf_counter()
    with anyio.move_on_after(limit_s):
        while started < n:
            size = min(batch, n - started)
            await _start_many(rt, size, STARTERS)
            started += size
            await _until(parked)
        complete = True
    elapsed = time.perf_counter() - start
    return _Parked(n, elapsed, supervisor.evictions - base, rt.live_runs, complete)


@dataclass(slots=True)
class _Delivery:
    senders: int
    messages: int
    seconds: float
    completed: int
    #: ``rt.result`` errors (a run reported failed or cancelled), first few as text.
    errors: int
    error_texts: list[str]

    @property
    def rate(self) -> float:
        finished = self.completed + self.errors
        return self.messages / self.seconds if finished == self.messages else math.nan


async def _deliver(rt: kitaru.Runtime, ids: Sequence[str], senders: int) -> _Delivery:
    """One message to each run from ``senders`` tasks; until every run has completed."""
    pending = iter(ids)
    completed = 0
    errors: list[str] = []

    async def finish(run_id: str) -> None:
        nonlocal completed
        try:
            value = await rt.result(run_id)
        except Exception as exc:  # counted and reported: see the README (cancelled race)
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        assert value == "ping", value
        completed += 1

    start = time.perf_counter()
    with anyio.move_on_after(60 + len(ids) / 100):
        async with anyio.create_task_group() as tg:

            async def sender() -> None:
                for run_id in pending:
                    await rt.send(run_id, "ping")
                    tg.start_soon(finish, run_id)

            for _ in range(senders):
                tg.start_soon(sender)
    seconds = time.perf_counter() - start
    return _Delivery(senders, len(ids), seconds, completed, len(errors), errors[:5])


@dataclass(slots=True)
class _Phase:
    parked: _Parked
    before: _Memory
    after: _Memory
    #: Runs per status once parked, and at the end.
    statuses: dict[str, int]
    delivery: _Delivery | None = None
    final_statuses: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Phase:
        delivery = data["delivery"]
        return cls(
            _Parked(**data["parked"]),
            _Memory(**data["before"]),
            _Memory(**data["after"]),
            data["statuses"],
            None if delivery is None else _Delivery(**delivery),
            data["final_statuses"],
        )


async def _waiting_phase(
    folder: Path, name: str, n: int, *, batch: int, senders: int | None
) -> _Phase:
    """Park ``n`` runs in a fresh SQLite file (memory read around it), then maybe wake them."""
    path = folder / f"{name}.db"
    async with _runtime(sqlite_url(path), folder, [waiter], idle_grace=IDLE_GRACE) as rt:
        warm = await _park(rt, WARMUP_RUNS, batch=WARMUP_RUNS, limit_s=60)
        assert warm.complete, warm
        await _deliver(rt, _waiting_ids(path), SENDERS)
        before = _Memory.read()
        parked = await _park(rt, n, batch=batch, limit_s=60 + n / 200)
        after = _Memory.read()
        phase = _Phase(parked, before, after, _status_counts(path))
        if senders is not None and parked.complete:
            phase.delivery = await _deliver(rt, _waiting_ids(path), senders)
            phase.final_statuses = _status_counts(path)
    return phase


async def _phase_main(name: str, n: int, batch: int, senders: int | None) -> _Phase:
    with scratch_dir() as folder:
        return await _waiting_phase(folder, name, n, batch=batch, senders=senders)


def _phase(ctx: Context, name: str, n: int, *, batch: int, senders: int | None) -> _Phase:
    """One parking phase, in a fresh interpreter unless ``ctx.in_process``."""
    if ctx.in_process:
        phase: _Phase = anyio.run(_phase_main, name, n, batch, senders, backend="asyncio")
        return phase
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    command = [sys.executable, "-m", "benchmarks._waiting", name, str(n), str(batch)]
    done = subprocess.run(
        [*command, str(senders or 0)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return _Phase.from_json(json.loads(done.stdout.splitlines()[-1]))


def _parked_row(name: str, phase: _Phase) -> Result:
    p = phase.parked
    # Runs the store shows waiting with no owner; short of the target unless parked.
    waiting = phase.statuses.get("waiting_released", 0)
    value = waiting if p.complete else min(waiting, p.evicted, p.runs - p.live)
    return Result(
        name,
        f"runs waiting + evicted ({p.seconds:.1f} s to park, {p.runs / p.seconds:,.0f} runs/s)",
        float(value),
        "runs",
        target=Target(">=", float(p.runs)),
        details={
            "method": f"{STARTERS} tasks call rt.start(waiter) (2 checkpoints, then "
            f"kitaru.wait(str)), idle_grace={IDLE_GRACE}; parked when "
            "supervisor.evictions grew by the run count and no actor is live",
            "runs": p.runs,
            "seconds_to_park": p.seconds,
            "evictions": p.evicted,
            "live_actors_left": p.live,
            "complete": p.complete,
            "status_counts_parked": phase.statuses,
            "status_counts_after_delivery": phase.final_statuses or None,
        },
    )


def _memory_details(phase: _Phase) -> dict[str, Any]:
    n = phase.parked.runs
    return {
        "method": "VmRSS after gc.collect(), before (runtime open, warm-up of "
        f"{WARMUP_RUNS} runs parked, woken and finished) and after parking",
        "rss_before_bytes": phase.before.rss,
        "rss_after_bytes": phase.after.rss,
        "peak_rss_bytes": phase.after.peak_rss,
        "python_allocated_blocks_per_run": (phase.after.blocks - phase.before.blocks) / n,
    }


def _delivery_row(name: str, d: _Delivery | None, label: str) -> Result:
    if d is not None and d.errors:
        label += f"; {d.errors} rt.result errors"
    return Result(
        name,
        f"messages/s, rt.send -> run completed ({label})",
        math.nan if d is None else d.rate,
        "msg/s",
        target=Target(">=", 2000.0),
        details={}
        if d is None
        else {
            "method": "each parked (evicted) run gets one rt.send; a task per run awaits "
            "rt.result; time from the first send to the last completion",
            "senders": d.senders,
            "messages": d.messages,
            "completed": d.completed,
            "result_errors": d.errors,
            "first_errors": d.error_texts,
            "seconds": d.seconds,
        },
    )


def bench_waiting_10k(ctx: Context) -> list[Result]:
    n = WAITING_RUNS
    seq = _phase(ctx, "waiting-seq", n, batch=n, senders=1)
    conc = _phase(ctx, "waiting-conc", n, batch=n, senders=SENDERS)
    growth = _growth(seq.before, seq.after)
    second = _growth(conc.before, conc.after)
    return [
        _parked_row(ROW_10K, seq),
        Result(
            ROW_10K,
            f"RSS growth per waiting run ({n:,} evicted)",
            growth / n / KIB,
            "KiB/run",
            target=Target("<", 2.0),
            samples=[growth / n / KIB, second / n / KIB],
            details={
                **_memory_details(seq),
                "second_population_kib_per_run": second / n / KIB,
            },
        ),
        _delivery_row(ROW_10K, seq.delivery, "1 sender task"),
        _delivery_row(ROW_10K, conc.delivery, f"{SENDERS} sender tasks"),
    ]


def bench_waiting_100k(ctx: Context) -> list[Result]:
    n = MANY_WAITING_RUNS
    phase = _phase(ctx, "waiting-100k", n, batch=BATCH, senders=None)
    growth = _growth(phase.before, phase.after)
    return [
        _parked_row(ROW_100K, phase),
        Result(
            ROW_100K,
            f"RSS growth, {n:,} waiting runs",
            growth / MIB,
            "MiB",
            target=Target("<", 200.0),
            details={**_memory_details(phase), "kib_per_run": growth / n / KIB},
        ),
    ]


# -- wake latency ----------------------------------------------------------------------


@dataclass(slots=True)
class _Latency:
    wake: list[float]  # seconds from rt.send to kitaru.wait returning in the flow
    send: list[float]  # seconds rt.send took to return
    evictions: int


def _latency_rows(name: str, figure: str, m: _Latency, p50_target: float) -> list[Result]:
    wake_ms = [s * MS for s in m.wake]
    details = {
        "samples": len(wake_ms),
        "send_returns_p50_ms": median(m.send) * MS,
        "send_returns_p99_ms": _percentile(m.send, 0.99) * MS,
        "evictions": m.evictions,
    }
    return [
        Result(
            name,
            f"{figure}, p50",
            median(wake_ms),
            "ms",
            target=Target("<", p50_target),
            samples=wake_ms,
            details=details,
        ),
        Result(name, f"{figure}, p99", _percentile(wake_ms, 0.99), "ms"),
    ]


async def _hot(store: str, folder: Path) -> _Latency:
    """Round trips to one resident run waiting in a loop (``echo``)."""
    rounds = HOT_WARMUP + HOT_ROUNDS
    sends: list[float] = []
    async with _runtime(store, folder, [echo], idle_grace=60.0) as rt:
        SINK.samples = []
        handle = await rt.start(echo, rounds)
        supervisor = rt.supervisor
        gc.collect()
        for _ in range(rounds):
            with anyio.fail_after(30):
                await _until(lambda: supervisor.is_resident(handle.id), interval=0.0005)
                SINK.arm()
                t0 = time.perf_counter()
                await rt.send(handle.id, t0)
                sends.append(time.perf_counter() - t0)
                await SINK.arrived.wait()
        assert await handle.result() == rounds
        evictions = rt.supervisor.evictions
    return _Latency(SINK.samples[HOT_WARMUP:], sends[HOT_WARMUP:], evictions)


async def bench_hot_wake(ctx: Context) -> list[Result]:
    with scratch_dir() as folder:
        memory = await _hot("memory://", folder)
        sqlite = await _hot(sqlite_url(folder / "hot.db"), folder)
    figure = "rt.send -> wait returns, resident run"
    return [
        *_latency_rows("10 hot-wake (memory)", figure, memory, 1.0),
        *_latency_rows("10 hot-wake (SQLite)", figure, sqlite, 3.0),
    ]


async def bench_cold_wake(ctx: Context) -> list[Result]:
    """One evicted run per sample: 20 recorded checkpoints are replayed before the wait."""
    runs = COLD_WARMUP + COLD_SAMPLES
    sends: list[float] = []
    with scratch_dir() as folder:
        async with _runtime(
            sqlite_url(folder / "cold.db"), folder, [cold_waiter], idle_grace=0.0
        ) as rt:
            SINK.samples = []
            ids = [(await rt.start(cold_waiter)).id for _ in range(runs)]
            with anyio.fail_after(60):
                await _until(lambda: not any(rt.is_live(run_id) for run_id in ids))
            gc.collect()
            for run_id in ids:
                record = await rt.store.get_run(run_id)
                assert record is not None
                assert (record.status, record.owner) == ("waiting", None), record
                assert not rt.is_live(run_id)
                with anyio.fail_after(30):
                    SINK.arm()
                    t0 = time.perf_counter()
                    await rt.send(run_id, t0)
                    sends.append(time.perf_counter() - t0)
                    await SINK.arrived.wait()
                    assert await rt.result(run_id) == COLD_CHECKPOINTS
            evictions = rt.supervisor.evictions
    m = _Latency(SINK.samples[COLD_WARMUP:], sends[COLD_WARMUP:], evictions)
    figure = f"rt.send -> wait returns, evicted run, {COLD_CHECKPOINTS} checkpoints replayed"
    return _latency_rows("11 cold-wake (SQLite)", figure, m, 10.0)


if __name__ == "__main__":
    _name, _runs, _batch, _senders = sys.argv[1:5]
    _result = anyio.run(
        _phase_main, _name, int(_runs), int(_batch), int(_senders) or None, backend="asyncio"
    )
    print(json.dumps(dataclasses.asdict(_result)))
