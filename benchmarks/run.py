"""Run kitaru's benchmarks and print one table: ``python -m benchmarks.run [--quick]``.

Results also go to ``benchmarks/results/latest.json``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from ._cases import BENCHMARKS, Benchmark
from ._harness import REPO_ROOT, Context, Result, Settings, format_table, report
from .llm import BENCHMARK as _LLM_BENCHMARK
from .postgres import BENCHMARK as _POSTGRES_BENCHMARK
from .webhook import bench_webhook

BENCHMARKS["webhook"] = Benchmark(
    "webhook", "13. webhook round trip over HTTP (SQLite)", bench_webhook, is_async=False
)
BENCHMARKS[_LLM_BENCHMARK.name] = _LLM_BENCHMARK
BENCHMARKS[_POSTGRES_BENCHMARK.name] = _POSTGRES_BENCHMARK

__all__ = ("main",)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmarks of kitaru; figures are medians, ratios are against a floor "
        "measured in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 repetitions instead of 7 (same sizes)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable, or comma-separated): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--reps", type=int, help="repetitions of each fast measurement")
    parser.add_argument(
        "--cpu",
        metavar="LIST",
        help="pin the process (and its threads and subprocesses) to these CPUs, e.g. 0 or 0,1 "
        "(Linux); makes aiosqlite's thread hops cheaper and steadier, see the README",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the selected benchmarks under cProfile and print kitaru's hot spots "
        "(timings are then inflated; results are not written)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    names: list[str] = []
    for item in args.only or []:
        names.extend(n.strip() for n in item.split(",") if n.strip())
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    args.cpus = None
    if args.cpu is not None:
        try:
            args.cpus = {int(c) for c in args.cpu.split(",") if c.strip()}
        except ValueError:
            parser.error(f"--cpu takes CPU numbers like 0 or 0,1, got {args.cpu!r}")
        if not hasattr(os, "sched_setaffinity"):
            parser.error("--cpu needs os.sched_setaffinity (Linux)")
    args.names = names or [n for n, b in BENCHMARKS.items() if not (args.quick and b.slow)]
    return args


def _run_one(bench: Benchmark, ctx: Context) -> list[Result]:
    if bench.is_async:
        results: list[Result] = anyio.run(functools.partial(bench.fn, ctx), backend="asyncio")
        return results
    return list(bench.fn(ctx))


def _print_profile(profile: cProfile.Profile, top: int = 25) -> None:
    """Kitaru's own functions, by cumulative and by own time (share of the total)."""
    stats = pstats.Stats(profile)
    total: float = max(getattr(stats, "total_tt", 0.0), 1e-12)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = getattr(stats, "stats", {})
    root = str(REPO_ROOT)
    rows = []
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in raw.items():
        path = Path(filename)
        if "kitaru" not in path.parts or "benchmarks" in path.parts:
            continue
        where = filename.removeprefix(root).lstrip("/")
        rows.append((where, line, func, calls, tottime, cumtime))
    for label, key in (("cumulative", 5), ("own", 4)):
        print(f"\nkitaru functions by {label} time (share of {total:.2f} s profiled):")
        for where, line, func, calls, tottime, cumtime in sorted(
            rows, key=lambda r: r[key], reverse=True
        )[:top]:
            print(
                f"  {cumtime / total:6.1%} cum  {tottime / total:6.1%} own  {calls:>8} calls  "
                f"{where}:{line}({func})"
            )
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    print("\nall functions by own time:")
    print(out.getvalue().replace(root + "/", ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.list:
        for bench in BENCHMARKS.values():
            note = "  (not in --quick)" if bench.slow else ""
            print(f"{bench.name:12}  {bench.title}{note}")
        return 0
    if args.cpus is not None:
        os.sched_setaffinity(0, args.cpus)
    skipped = [n for n in BENCHMARKS if n not in args.names and BENCHMARKS[n].slow]
    if args.quick and skipped and not args.only:
        print(
            f"--quick leaves out {', '.join(skipped)} (run it with --only)",
            file=sys.stderr,
            flush=True,
        )
    settings = Settings.make(quick=args.quick, reps=args.reps)
    ctx = Context(settings, in_process=args.profile)
    results: list[Result] = []
    started = time.perf_counter()
    profile = cProfile.Profile() if args.profile else None
    for name in args.names:
        bench = BENCHMARKS[name]
        print(f"running {bench.title} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        try:
            results.extend(_run_one(bench, ctx))
        finally:
            if profile is not None:
                profile.disable()
        print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    mode = "quick" if settings.quick else "full"
    print(f"\nkitaru benchmarks ({mode}, median of {settings.reps}, {elapsed:.0f} s)\n")
    print(format_table(results))
    if profile is not None:
        _print_profile(profile)
        print("\n(profiled run: timings above are inflated and were not written)")
        return 0
    path = report(results, settings, elapsed, args.names)
    print(f"\nwrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
