"""Benchmark 12: wall time of ``kitaru runs`` and ``kitaru show`` on a large store.

The store holds 100,000 runs (mixed flows and statuses, 3 journal entries
each, some with token usage) and one run with 10,000 checkpoints, the newest,
so ``kitaru runs`` lists it too. It is built once with direct store writes
(``kitaru.storage.open_store`` + ``create_run`` with the journal, group
committed) and kept in a temporary folder keyed by the build's version, so
later passes reuse it. Each command runs as a fresh ``python -m kitaru``
subprocess, interpreter start included: one untimed warm-up round, then the
best and the median of the repetitions, every command once per round.
``python -c "import kitaru"`` is timed the same way, as the floor every
command pays; on a busy machine "median - floor" (what the command adds to
it) and the CPU time (user + system, median) are the steadier figures.

Stand-alone: ``python -m benchmarks.cli [--reps N] [--rebuild]``; in the pass:
``python -m benchmarks.run --only cli``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ._harness import REPO_ROOT, Context, Result, Target, sqlite_url

__all__ = ("BIG_RUN", "bench_cli", "build_store", "main")

RUNS = 100_000
ENTRIES_PER_RUN = 3
BIG_CHECKPOINTS = 10_000
BIG_RUN = "b16" + "0" * 29  # a generated-looking (hex) id
TARGET_S = 0.5
#: Bump when the store's content changes, so a cached store is rebuilt.
BUILD = 3
_FLOWS = ("writer", "researcher", "approval", "triage", "summarise")
_STATUSES = (
    ("completed", 70),
    ("failed", 10),
    ("waiting", 12),
    ("sleeping", 2),
    ("running", 2),
    ("cancelled", 4),
)
_CONCURRENCY = 64


def cache_dir() -> Path:
    """Where the benchmark store is kept between passes."""
    return Path(tempfile.gettempdir()) / f"kitaru-bench-cli-{BUILD}-{RUNS}-{BIG_CHECKPOINTS}"


def _entry(
    run_id: str,
    position: int,
    name: str,
    kind: str,
    started_at: float,
    duration_s: float,
    metadata: bytes | None,
) -> Any:
    from kitaru.storage.base import JournalEntry

    return JournalEntry(
        run_id=run_id,
        position=position,
        name=name,
        kind=kind,
        status="completed",
        attempts=1,
        started_at=started_at,
        duration_s=duration_s,
        value=b'"a small result"',
        metadata=metadata,
    )


def _records(now: float) -> list[tuple[Any, list[Any]]]:
    from kitaru.storage.base import RunRecord

    rng = random.Random(12)
    statuses = [s for s, weight in _STATUSES for _ in range(weight)]
    wait = json.dumps(
        [
            {
                "kind": "wait",
                "position": 2,
                "topic": "input",
                "question": "Approve the draft?",
                "schema": {"type": "boolean"},
                "deadline": None,
            }
        ]
    ).encode()
    out: list[tuple[Any, list[Any]]] = []
    start = now - 30 * 86400
    for i in range(RUNS):
        run_id = f"{rng.getrandbits(128):032x}"
        created = start + i * (30 * 86400 / RUNS)
        status = rng.choice(statuses)
        tokens = rng.randrange(0, 5000) if i % 3 == 0 else 0
        run = RunRecord(
            id=run_id,
            flow=rng.choice(_FLOWS),
            status=status,
            created_at=created,
            updated_at=created + rng.uniform(0.01, 600),
            input=b'{"topic": "benchmarks"}',
            output=b'"done"' if status == "completed" else None,
            error="ValueError: boom" if status == "failed" else None,
            wait=wait if status == "waiting" else None,
            wait_topics="input" if status == "waiting" else None,
            input_tokens=tokens,
            output_tokens=tokens // 4,
            cost_usd=tokens * 2e-6 if tokens else None,
        )
        entries = [
            _entry(run_id, p, f"step{p}", "checkpoint", created + p, 0.01, None)
            for p in range(ENTRIES_PER_RUN)
        ]
        out.append((run, entries))
    return out


def _big_run(now: float) -> tuple[Any, list[Any]]:
    from kitaru.storage.base import RunRecord

    run = RunRecord(
        id=BIG_RUN,
        flow="long_agent",
        status="completed",
        created_at=now,
        updated_at=now + 3600,
        input=b'{"task": "a long one"}',
        output=b'"finished"',
        input_tokens=1_234_567,
        output_tokens=345_678,
        cost_usd=12.34,
    )
    entries = [
        _entry(
            BIG_RUN,
            p,
            f"step{p % 50}",
            "llm" if p % 5 == 0 else "checkpoint",
            now + p * 0.36,
            0.35,
            b'{"tokens": 120}' if p % 5 == 0 else None,
        )
        for p in range(BIG_CHECKPOINTS)
    ]
    return run, entries


async def _write(url: str) -> None:
    from kitaru.storage import open_store

    now = time.time() - 3600
    records = _records(now)
    records.append(_big_run(now))
    store = await open_store(url)
    try:
        pending = iter(records)  # shared: each task takes the next run when it is free

        async def writer() -> None:
            for run, entries in pending:
                await store.create_run(run, entries)

        async with anyio.create_task_group() as tg:
            for _ in range(_CONCURRENCY):
                tg.start_soon(writer)
    finally:
        await store.aclose()


def build_store(*, rebuild: bool = False) -> Path:
    """The benchmark store's folder (built now unless a complete one is cached)."""
    folder = cache_dir()
    done = folder / "complete"
    if done.exists() and not rebuild:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    anyio.run(_write, sqlite_url(folder / "kitaru.db"), backend="asyncio")
    done.write_text(f"built in {time.perf_counter() - started:.1f} s\n")
    return folder


def _env() -> dict[str, str]:
    path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(command: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Wall and CPU seconds of one run of ``command``, and the size of what it printed."""
    cpu = _children_cpu()
    began = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}: {done.stderr.decode()}"
        )
    return elapsed, _children_cpu() - cpu, len(done.stdout)


def measure(reps: int = 5, *, rebuild: bool = False) -> list[dict[str, Any]]:
    """Time each command; one dict per command.

    Repetitions are interleaved (every command once per round), so load from
    other processes hits the floor and the commands alike; ``over_floor_s`` is
    a command's median minus the floor's, the part the command itself costs.
    """
    folder = build_store(rebuild=rebuild)
    url = sqlite_url(folder / "kitaru.db")
    kitaru_cmd = [sys.executable, "-m", "kitaru", "--store", url]
    commands = (
        ("python -c 'import kitaru' (floor)", [sys.executable, "-c", "import kitaru"], None),
        ("kitaru runs", [*kitaru_cmd, "runs"], TARGET_S),
        ("kitaru runs --json", [*kitaru_cmd, "runs", "--json"], None),
        ("kitaru runs --status waiting", [*kitaru_cmd, "runs", "--status", "waiting"], None),
        ("kitaru show RUN (10,000 checkpoints)", [*kitaru_cmd, "show", BIG_RUN[:12]], TARGET_S),
        ("kitaru show RUN --json", [*kitaru_cmd, "show", BIG_RUN[:12], "--json"], None),
    )
    env = _env()
    samples: list[list[float]] = [[] for _ in commands]
    cpu: list[list[float]] = [[] for _ in commands]
    sizes = [0] * len(commands)
    for rep in range(reps + 1):  # round 0 warms the disk cache and bytecode up
        for i, (_, command, _) in enumerate(commands):
            elapsed, cpu_s, sizes[i] = _once(command, folder, env)
            if rep:
                samples[i].append(elapsed)
                cpu[i].append(cpu_s)
    floor = statistics.median(samples[0])
    rows = []
    for (label, _, target), taken, used, size in zip(commands, samples, cpu, sizes, strict=True):
        rows.append(
            {
                "command": label,
                "cpu_s": statistics.median(used),
                "best_s": min(taken),
                "median_s": statistics.median(taken),
                "over_floor_s": statistics.median(taken) - floor,
                "samples_s": taken,
                "stdout_bytes": size,
                "target_s": target,
            }
        )
    return rows


def _format(rows: Sequence[dict[str, Any]]) -> str:
    header = ("command", "best", "median", "median - floor", "cpu", "output", "target")
    table = [header]
    for r in rows:
        target = r["target_s"]
        verdict = "-" if target is None else f"< {target} s: "
        if target is not None:
            verdict += "PASS" if r["median_s"] < target else "FAIL"
        table.append(
            (
                r["command"],
                f"{r['best_s'] * 1000:.0f} ms",
                f"{r['median_s'] * 1000:.0f} ms",
                f"{r['over_floor_s'] * 1000:.0f} ms",
                f"{r['cpu_s'] * 1000:.0f} ms",
                f"{r['stdout_bytes'] / 1024:.0f} KiB",
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table
    )


def bench_cli(ctx: Context) -> list[Result]:
    """Rows for ``python -m benchmarks.run``."""
    rows = measure(reps=max(ctx.settings.reps, 5) if not ctx.settings.quick else 3)
    results = []
    for r in rows:
        target = None if r["target_s"] is None else Target("<", r["target_s"] * 1000)
        results.append(
            Result(
                "12 cli",
                f"{r['command']} (100,000 runs)",
                r["median_s"] * 1000,
                "ms",
                target=target,
                samples=[s * 1000 for s in r["samples_s"]],
                details={
                    "best_ms": r["best_s"] * 1000,
                    "median_minus_floor_ms": r["over_floor_s"] * 1000,
                    "cpu_ms": r["cpu_s"] * 1000,
                    "stdout_bytes": r["stdout_bytes"],
                },
            )
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__)
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached store")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    folder = build_store(rebuild=args.rebuild)
    print(f"store: {folder} ({(folder / 'complete').read_text().strip()})", file=sys.stderr)
    rows = measure(args.reps)
    print(f"\nkitaru CLI on {RUNS:,} runs + one of {BIG_CHECKPOINTS:,} checkpoints ", end="")
    print(f"(best and median of {args.reps}, {time.perf_counter() - began:.0f} s)\n")
    print(_format(rows))
    met = all(r["median_s"] < r["target_s"] for r in rows if r["target_s"] is not None)
    print(f"\ntarget (< {TARGET_S} s for runs and show, median): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
