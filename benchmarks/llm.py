"""Benchmark 14: what ``kitaru.llm`` adds to a litellm call, and what a replayed call costs.

Both flows run on a SQLite file and make the same ``CALLS`` sequential calls
to ``gpt-4o-mini`` with litellm's ``mock_response`` (no network; litellm still
builds, logs and prices a full response):

- ``bare``: ``await litellm.acompletion(...)`` in flow code, nothing recorded
  (the floor);
- ``kitaru``: ``await kitaru.llm(...)``: each call journaled and committed,
  with its usage added to the run.

Each flow times its own loop (``perf_counter`` around the calls), so run
start and completion are outside both figures. The kitaru flow then waits and,
with ``idle_grace=0``, is evicted; a message rehydrates it and the same loop
is timed again, now replaying every call from the journal. Repetitions
alternate bare and kitaru runs; the first is an untimed warm-up (it imports
litellm).
"""

from __future__ import annotations

import os
import time

import anyio

import kitaru

from ._cases import Benchmark
from ._harness import Context, Result, Target, median, scratch_dir, sqlite_url

__all__ = ("BENCHMARK", "bench_llm")

# litellm's bundled price table, instead of fetching the latest one when it is imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "gpt-4o-mini"
CALLS = 200
MS = 1e3
US = 1e6

#: Loop seconds of each activation of ``journaled_calls``: live, then replayed.
_loops: list[float] = []
#: Set when an activation finished its loop (so nothing polls the run while it is timed).
_looped: list[anyio.Event] = []


@kitaru.flow
async def bare_calls(n: int) -> float:
    import litellm

    began = time.perf_counter()
    for i in range(n):
        await litellm.acompletion(
            model=MODEL, messages=[{"role": "user", "content": f"q{i}"}], mock_response="ok"
        )
    return time.perf_counter() - began


@kitaru.flow
async def journaled_calls(n: int) -> float:
    began = time.perf_counter()
    for i in range(n):
        await kitaru.llm(f"q{i}", model=MODEL, mock_response="ok")
    elapsed = time.perf_counter() - began
    _loops.append(elapsed)
    _looped[-1].set()
    await kitaru.wait(str)  # evicted here (idle_grace=0); the message replays the loop
    return elapsed


async def _kitaru_rep(rt: kitaru.Runtime) -> tuple[float, float]:
    """(live loop seconds, replayed loop seconds) of one run."""
    _loops.clear()
    _looped[:] = [anyio.Event()]
    run = await rt.start(journaled_calls, CALLS)
    await _looped[0].wait()
    while True:
        info = await run.info()
        if info.status == "waiting" and info.owner is None:
            break  # suspended and evicted
        await anyio.sleep(0.005)
    await rt.send(run.id, "go")
    await run.result()
    live, replayed = _loops
    return live, replayed


async def bench_llm(ctx: Context) -> list[Result]:
    reps = ctx.settings.reps
    bare: list[float] = []
    live: list[float] = []
    replayed: list[float] = []
    with scratch_dir() as folder:
        url = sqlite_url(folder / "llm.db")
        artifacts = str(folder / "artifacts")
        async with kitaru.runtime(store=url, artifacts=artifacts, idle_grace=0) as rt:
            for rep in range(reps + 1):  # the first one is the warm-up
                seconds = await (await rt.start(bare_calls, CALLS)).result()
                live_s, replayed_s = await _kitaru_rep(rt)
                if rep:
                    bare.append(seconds / CALLS)
                    live.append(live_s / CALLS)
                    replayed.append(replayed_s / CALLS)
    ratios = [k / b for k, b in zip(live, bare, strict=True)]
    speedups = [k / r for k, r in zip(live, replayed, strict=True)]
    floor = f"bare litellm.acompletion(mock_response): {median(bare) * MS:.2f} ms"
    return [
        Result(
            "14 llm overhead (SQLite)",
            "kitaru.llm per call, journaled (vs bare litellm)",
            median(live) * MS,
            "ms",
            target=Target("<=", 1.3, on="ratio"),
            ratio=median(ratios),
            floor=floor,
            samples=[s * MS for s in live],
            details={
                "calls_per_run": CALLS,
                "model": MODEL,
                "bare_ms": median(bare) * MS,
                "bare_samples_ms": [s * MS for s in bare],
                "ratio_samples": ratios,
                "overhead_ms_per_call": (median(live) - median(bare)) * MS,
            },
        ),
        Result(
            "14 llm replay (SQLite)",
            "live kitaru.llm call / replayed call",
            median(speedups),
            "x",
            target=Target(">=", 20.0),
            samples=speedups,
            details={
                "replayed_us_per_call": median(replayed) * US,
                "replayed_samples_us": [s * US for s in replayed],
                "live_ms_per_call": median(live) * MS,
                "method": "each flow times its own loop of calls: live in the first activation, "
                "replayed from the journal after eviction and a message",
            },
        ),
    ]


BENCHMARK = Benchmark("llm", "14. kitaru.llm overhead and replay (SQLite)", bench_llm)
