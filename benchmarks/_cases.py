"""The benchmarks. Each takes the pass's :class:`Context` and returns table rows.

Every timed section is preceded by one untimed warm-up of the same work and a
garbage collection; each figure is the median over ``settings.reps``
repetitions. Floors are measured in the same process, interleaved with the
kitaru repetitions they are compared to, so machine noise hits both alike.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

import kitaru

from ._floor import floor_commits, round_trips
from ._flows import GATE, recoverable, sequential
from ._harness import (
    REPO_ROOT,
    Context,
    Result,
    Target,
    atimed,
    median,
    scratch_dir,
    sqlite_url,
)
from ._waiting import bench_cold_wake, bench_hot_wake, bench_waiting_10k, bench_waiting_100k
from .cli import bench_cli

__all__ = ("BENCHMARKS", "Benchmark")

US = 1e6
MS = 1e3

#: Sizes (the same in --quick: only repetitions shrink, so figures stay comparable).
SEQ_CHECKPOINTS = 1_000
CONC_FLOWS = 1_000
CONC_CHECKPOINTS = 10
SHORT_FLOWS = 1_000
SHORT_CHECKPOINTS = 3
RECOVERY_CHECKPOINTS = 10
RECOVERY_BLOCK_AT = 5
REHYDRATE_ENTRIES = 1_000


def _runtime(
    store: str, folder: Path, flows: Sequence[kitaru.Flow[Any, Any]] = ()
) -> kitaru.Runtime:
    """A runtime on ``store`` whose artifacts go under ``folder``."""
    return kitaru.runtime(store=store, artifacts=str(folder / "artifacts"), flows=flows)


def _group_commit(rt: kitaru.Runtime) -> dict[str, int] | None:
    stats = getattr(rt.store, "statistics", None)
    if stats is None:
        return None
    s = stats()
    return {"batches": s.batches, "ops": s.ops, "fallbacks": s.fallbacks}


# -- the floor ----------------------------------------------------------------------


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _floor_sample(folder: Path) -> float:
    """Seconds per INSERT + COMMIT over one fresh file of SEQ_CHECKPOINTS rows."""
    path = folder / f"floor-{time.perf_counter_ns()}.db"
    try:
        return await floor_commits(path, SEQ_CHECKPOINTS) / SEQ_CHECKPOINTS
    finally:
        _remove_db(path)


async def _hop_sample(folder: Path) -> float:
    """Seconds per aiosqlite round trip (``SELECT 1``)."""
    path = folder / f"hop-{time.perf_counter_ns()}.db"
    try:
        return await round_trips(path, SEQ_CHECKPOINTS) / SEQ_CHECKPOINTS
    finally:
        _remove_db(path)


async def _ensure_floor(ctx: Context, folder: Path) -> float:
    """Benchmark 1's floor; measured here if benchmark 1 did not run in this pass."""
    if ctx.floor_commit_s is None:
        await _floor_sample(folder)  # warm-up
        await _hop_sample(folder)
        for _ in range(ctx.settings.reps):
            ctx.floor_samples.append(await _floor_sample(folder))
            ctx.hop_samples.append(await _hop_sample(folder))
        ctx.floor_commit_s = median(ctx.floor_samples)
        ctx.hop_s = median(ctx.hop_samples)
    return ctx.floor_commit_s


def _floor_rows(ctx: Context) -> list[Result]:
    """The floor's rows, once per pass (empty if already in the table)."""
    if ctx.floor_reported:
        return []
    ctx.floor_reported = True
    assert ctx.floor_commit_s is not None
    assert ctx.hop_s is not None
    return [
        Result(
            "floor",
            "aiosqlite INSERT+COMMIT (WAL, sync=NORMAL)",
            ctx.floor_commit_s * US,
            "us/commit",
            samples=[s * US for s in ctx.floor_samples],
            details={
                "commits_per_s": 1 / ctx.floor_commit_s,
                "rows": SEQ_CHECKPOINTS,
                "method": "await db.execute(INSERT); await db.commit() per row, one connection",
            },
        ),
        Result(
            "floor (context)",
            "aiosqlite round trip, SELECT 1",
            ctx.hop_s * US,
            "us",
            samples=[s * US for s in ctx.hop_samples],
            details={
                "method": "await db.execute('SELECT 1'): one hop into the worker thread and back",
            },
        ),
    ]


def _floor_text(ctx: Context) -> str:
    assert ctx.floor_commit_s is not None
    return f"aiosqlite INSERT+COMMIT {ctx.floor_commit_s * US:.1f} us"


# -- 1 and 3: sequential checkpoints ---------------------------------------------------


@dataclass(slots=True)
class _Sequential:
    per_checkpoint: list[float]  # net seconds per checkpoint, per repetition
    totals: list[float]  # seconds of the flow with SEQ_CHECKPOINTS checkpoints
    empties: list[float]  # seconds of the same flow with none
    floors: list[float]  # seconds per floor commit, interleaved (SQLite only)
    hops: list[float]  # seconds per aiosqlite round trip, interleaved (SQLite only)


async def _sequential(ctx: Context, store: str, folder: Path, *, floor: bool) -> _Sequential:
    n = SEQ_CHECKPOINTS
    out = _Sequential([], [], [], [], [])
    async with _runtime(store, folder, [sequential]) as rt:

        async def run(count: int) -> None:
            handle = await rt.start(sequential, count)
            assert await handle.result() == count

        if floor:
            await _floor_sample(folder)
            await _hop_sample(folder)
        await run(n)
        await run(0)
        for _ in range(ctx.settings.reps):
            if floor:
                out.floors.append(await _floor_sample(folder))
                out.hops.append(await _hop_sample(folder))
            total = await atimed(lambda: run(n))
            empty = await atimed(lambda: run(0))
            out.totals.append(total)
            out.empties.append(empty)
            out.per_checkpoint.append((total - empty) / n)
    return out


async def bench_sequential_sqlite(ctx: Context) -> list[Result]:
    with scratch_dir() as folder:
        m = await _sequential(ctx, sqlite_url(folder / "kitaru.db"), folder, floor=True)
    ctx.floor_samples, ctx.hop_samples = m.floors, m.hops
    ctx.floor_commit_s = floor = median(m.floors)
    ctx.hop_s = median(m.hops)
    value = median(m.per_checkpoint)
    return [
        *_floor_rows(ctx),
        Result(
            "1 sequential (SQLite)",
            "per checkpoint, net of a 0-checkpoint flow",
            value * US,
            "us",
            target=Target("<=", 1.2, on="ratio"),
            ratio=value / floor,
            floor=_floor_text(ctx),
            samples=[s * US for s in m.per_checkpoint],
            details={
                "checkpoints": SEQ_CHECKPOINTS,
                "method": "(flow with N checkpoints - same flow with 0) / N, start to result",
                "gross_us_per_checkpoint": median(m.totals) / SEQ_CHECKPOINTS * US,
                "empty_flow_ms": median(m.empties) * MS,
                "pairwise_ratios": [p / f for p, f in zip(m.per_checkpoint, m.floors, strict=True)],
            },
        ),
    ]


# -- 2, 3, 4: many flows at once -----------------------------------------------------------


@dataclass(slots=True)
class _Many:
    seconds: list[float]
    group_commit: dict[str, int] | None


async def _many(
    ctx: Context,
    store: Callable[[int], str],
    folder: Path,
    *,
    flows: int,
    checkpoints: int,
    starts: str,
) -> _Many:
    """Run ``flows`` flows of ``checkpoints`` each; seconds from first start to last result.

    ``starts="loop"``: ``await rt.start(...)`` one after another, then await all
    results together. ``starts="together"``: every flow is started (and its
    result awaited) by its own task, all spawned at once.
    """
    out = _Many([], None)
    for rep in range(ctx.settings.reps + 1):  # the first one is the warm-up
        async with _runtime(store(rep), folder, [sequential]) as rt:

            async def run_all(rt: kitaru.Runtime = rt) -> None:
                handles: list[kitaru.RunHandle] = []
                if starts == "loop":
                    for _ in range(flows):
                        handles.append(await rt.start(sequential, checkpoints))
                    async with anyio.create_task_group() as tg:
                        for handle in handles:
                            tg.start_soon(handle.result)
                else:

                    async def one() -> None:
                        handle = await rt.start(sequential, checkpoints)
                        await handle.result()

                    async with anyio.create_task_group() as tg:
                        for _ in range(flows):
                            tg.start_soon(one)

            seconds = await atimed(run_all)
            stats = _group_commit(rt)
        if rep:
            out.seconds.append(seconds)
            out.group_commit = stats
    return out


def _sqlite_files(folder: Path, prefix: str) -> Callable[[int], str]:
    return lambda rep: sqlite_url(folder / f"{prefix}-{rep}.db")


async def bench_concurrent_sqlite(ctx: Context) -> list[Result]:
    with scratch_dir() as folder:
        floor = await _ensure_floor(ctx, folder)
        m = await _many(
            ctx,
            _sqlite_files(folder, "conc"),
            folder,
            flows=CONC_FLOWS,
            checkpoints=CONC_CHECKPOINTS,
            starts="loop",
        )
        t = await _many(
            ctx,
            _sqlite_files(folder, "conc-tasks"),
            folder,
            flows=CONC_FLOWS,
            checkpoints=CONC_CHECKPOINTS,
            starts="together",
        )
    rates = [CONC_FLOWS * CONC_CHECKPOINTS / s for s in m.seconds]
    value = median(rates)
    task_rates = [CONC_FLOWS * CONC_CHECKPOINTS / s for s in t.seconds]
    task_value = median(task_rates)
    return [
        *_floor_rows(ctx),
        Result(
            "2 concurrent (SQLite)",
            f"{CONC_FLOWS} flows x {CONC_CHECKPOINTS} checkpoints",
            value,
            "checkpoints/s",
            target=Target(">=", 3.0, on="ratio"),
            ratio=value * floor,
            floor=f"{1 / floor:,.0f} commits/s ({_floor_text(ctx)})",
            samples=rates,
            details={
                "method": "await rt.start() per flow in a loop, then all results awaited "
                "together; time from the first start to the last result",
                "seconds": m.seconds,
                "group_commit_last_rep": m.group_commit,
            },
        ),
        Result(
            "2 concurrent (SQLite)",
            "same, each flow started by its own task",
            task_value,
            "checkpoints/s",
            ratio=task_value * floor,
            floor=f"{1 / floor:,.0f} commits/s ({_floor_text(ctx)})",
            samples=task_rates,
            details={
                "method": "one task per flow (rt.start then result), all spawned at once: "
                "shows what the serial start loop above costs",
                "seconds": t.seconds,
                "group_commit_last_rep": t.group_commit,
            },
        ),
    ]


async def bench_memory(ctx: Context) -> list[Result]:
    with scratch_dir() as folder:
        seq = await _sequential(ctx, "memory://", folder, floor=False)
        many = await _many(
            ctx,
            lambda rep: "memory://",
            folder,
            flows=CONC_FLOWS,
            checkpoints=CONC_CHECKPOINTS,
            starts="loop",
        )
    per = median(seq.per_checkpoint)
    rates = [CONC_FLOWS * CONC_CHECKPOINTS / s for s in many.seconds]
    rate = median(rates)
    floor = ctx.floor_commit_s
    return [
        Result(
            "3 sequential (memory)",
            "per checkpoint, net of a 0-checkpoint flow",
            per * US,
            "us",
            target=Target("<", 25.0),
            samples=[s * US for s in seq.per_checkpoint],
            details={
                "checkpoints": SEQ_CHECKPOINTS,
                "gross_us_per_checkpoint": median(seq.totals) / SEQ_CHECKPOINTS * US,
                "empty_flow_ms": median(seq.empties) * MS,
            },
        ),
        Result(
            "3 concurrent (memory)",
            f"{CONC_FLOWS} flows x {CONC_CHECKPOINTS} checkpoints",
            rate,
            "checkpoints/s",
            ratio=None if floor is None else rate * floor,
            floor=None if floor is None else f"{1 / floor:,.0f} commits/s (SQLite floor)",
            samples=rates,
            details={"method": "as benchmark 2", "seconds": many.seconds},
        ),
    ]


async def bench_short_flows(ctx: Context) -> list[Result]:
    with scratch_dir() as folder:
        m = await _many(
            ctx,
            _sqlite_files(folder, "short"),
            folder,
            flows=SHORT_FLOWS,
            checkpoints=SHORT_CHECKPOINTS,
            starts="together",
        )
    rates = [SHORT_FLOWS / s for s in m.seconds]
    floor = ctx.floor_commit_s
    return [
        Result(
            "4 short flows (SQLite)",
            f"{SHORT_FLOWS} flows x {SHORT_CHECKPOINTS} checkpoints, started at once",
            median(rates),
            "flows/s",
            target=Target(">=", 2000.0),
            samples=rates,
            details={
                "method": "one task per flow (rt.start then result), all spawned at once; "
                "time from the first spawn to the last result",
                "seconds": m.seconds,
                "group_commit_last_rep": m.group_commit,
                "floor_commits_per_s": None if floor is None else 1 / floor,
            },
        )
    ]


# -- 5: recovery -------------------------------------------------------------------------


async def _interrupted_store(folder: Path, name: str, n: int, block_at: int) -> tuple[Path, str]:
    """A SQLite file holding one run of ``recoverable(n)`` interrupted at ``block_at``.

    The runtime is closed while checkpoint ``block_at`` blocks: the run stays
    'running' with ``block_at`` recorded checkpoints and no lease.
    """
    path = folder / f"{name}.db"
    GATE.arm(block_at)
    async with _runtime(sqlite_url(path), folder) as rt:
        handle = await rt.start(recoverable, n)
        assert GATE.reached is not None
        with anyio.fail_after(60):
            await GATE.reached.wait()
    GATE.arm(None)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        status, owner = conn.execute(
            "SELECT status, owner FROM runs WHERE id = ?", (handle.id,)
        ).fetchone()
        (entries,) = conn.execute(
            "SELECT count(*) FROM journal WHERE run_id = ?", (handle.id,)
        ).fetchone()
    conn.close()
    assert (status, owner, entries) == ("running", None, block_at), (status, owner, entries)
    return path, handle.id


async def _resume(
    folder: Path, template: Path, run_id: str, n: int, block_at: int, rep: int
) -> float:
    """Seconds from opening a runtime on a copy of ``template`` to the run's result."""
    path = folder / f"{template.stem}-{rep}.db"
    shutil.copyfile(template, path)
    GATE.arm(None)
    gc.collect()
    start = time.perf_counter()
    async with _runtime(sqlite_url(path), folder, [recoverable]) as rt:
        value = await rt.result(run_id)
        seconds = time.perf_counter() - start
    assert value == sum(range(n)), value
    assert GATE.live_calls == n - block_at, GATE.live_calls
    _remove_db(path)
    return seconds


async def _open_only(folder: Path, template: Path, rep: int) -> float:
    """Seconds to open (and close) a runtime that finds nothing to recover."""
    path = folder / f"{template.stem}-open-{rep}.db"
    shutil.copyfile(template, path)
    gc.collect()
    start = time.perf_counter()
    async with _runtime(sqlite_url(path), folder, [sequential]):
        seconds = time.perf_counter() - start
    _remove_db(path)
    return seconds


async def bench_recovery(ctx: Context) -> list[Result]:
    reps = ctx.settings.reps
    n_big = REHYDRATE_ENTRIES + 1
    with scratch_dir() as folder:
        small, small_id = await _interrupted_store(
            folder, "small", RECOVERY_CHECKPOINTS, RECOVERY_BLOCK_AT
        )
        big, big_id = await _interrupted_store(folder, "big", n_big, REHYDRATE_ENTRIES)
        base, base_id = await _interrupted_store(folder, "base", 1, 0)

        async def small_run(rep: int) -> float:
            return await _resume(
                folder, small, small_id, RECOVERY_CHECKPOINTS, RECOVERY_BLOCK_AT, rep
            )

        async def big_run(rep: int) -> float:
            return await _resume(folder, big, big_id, n_big, REHYDRATE_ENTRIES, rep)

        async def base_run(rep: int) -> float:
            return await _resume(folder, base, base_id, 1, 0, rep)

        runs: dict[str, Callable[[int], Awaitable[float]]] = {
            "small": small_run,
            "big": big_run,
            "base": base_run,
            "open": lambda rep: _open_only(folder, base, rep),
        }
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for rep in range(reps + 1):  # the first one is the warm-up
            for name, fn in runs.items():
                seconds = await fn(rep)
                if rep:
                    samples[name].append(seconds)
    per_entry = [
        (b - z) / REHYDRATE_ENTRIES for b, z in zip(samples["big"], samples["base"], strict=True)
    ]
    return [
        Result(
            "5 recovery (SQLite)",
            f"open runtime -> interrupted {RECOVERY_CHECKPOINTS}-checkpoint run completed",
            median(samples["small"]) * MS,
            "ms",
            target=Target("<", 100.0),
            samples=[s * MS for s in samples["small"]],
            details={
                "recorded_entries": RECOVERY_BLOCK_AT,
                "live_checkpoints": RECOVERY_CHECKPOINTS - RECOVERY_BLOCK_AT,
                "open_runtime_nothing_to_recover_ms": median(samples["open"]) * MS,
                "open_samples_ms": [s * MS for s in samples["open"]],
            },
        ),
        Result(
            "5 rehydrate (SQLite)",
            f"per replayed entry ({REHYDRATE_ENTRIES}-entry journal)",
            median(per_entry) * US,
            "us/entry",
            samples=[s * US for s in per_entry],
            details={
                "method": f"(resume with {REHYDRATE_ENTRIES} recorded + 1 live checkpoint - "
                "resume with 0 recorded + 1 live) / entries; each timed from runtime open "
                "to the result",
                "resume_1000_ms": median(samples["big"]) * MS,
                "resume_0_ms": median(samples["base"]) * MS,
            },
        ),
    ]


# -- 6: storage -----------------------------------------------------------------------------


def _truncate_wal(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


def _dbstat(path: Path, rows: int) -> dict[str, float] | None:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute(
            "SELECT sum(pgsize), sum(payload), sum(unused), count(*) FROM dbstat "
            "WHERE name = 'journal'"
        ).fetchone()
        total = conn.execute("SELECT sum(pgsize) FROM dbstat").fetchone()[0]
    except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
        return None
    finally:
        conn.close()
    pgsize, payload, unused, pages = found
    return {
        "journal_pages": pages,
        "journal_bytes_per_row": pgsize / rows,
        "journal_payload_per_row": payload / rows,
        "journal_unused_per_row": unused / rows,
        "journal_fill": payload / pgsize,
        "database_bytes": total,
    }


async def bench_storage(ctx: Context) -> list[Result]:
    rows = ctx.settings.storage_rows
    with scratch_dir() as folder:
        path = folder / "storage.db"
        url = sqlite_url(path)
        async with _runtime(url, folder, [sequential]):
            pass
        empty = _truncate_wal(path)
        async with _runtime(url, folder, [sequential]) as rt:
            handle = await rt.start(sequential, rows)
            assert await handle.result() == rows
        full = _truncate_wal(path)
        stat = _dbstat(path, rows)
    per_row = (full - empty) / rows
    results = [
        Result(
            "6 storage (SQLite)",
            f"file growth per checkpoint ({rows:,} rows, WAL truncated)",
            per_row,
            "B/row",
            target=Target("<", 150.0),
            details={"empty_file_bytes": empty, "full_file_bytes": full, "rows": rows},
        )
    ]
    if stat is not None:
        results.append(
            Result(
                "6 storage (SQLite)",
                "dbstat: journal pages per checkpoint",
                stat["journal_bytes_per_row"],
                "B/row",
                target=Target("<", 150.0),
                details=stat,
            )
        )
        results.append(
            Result(
                "6 storage (SQLite)",
                "dbstat: journal payload per checkpoint",
                stat["journal_payload_per_row"],
                "B/row",
                details={"page_fill": stat["journal_fill"]},
            )
        )
    return results


# -- 7: import ----------------------------------------------------------------------------------


def _run_python(code: str, *args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, done.stderr


def _import_profile(top: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Where ``import kitaru`` spends its time, from ``-X importtime`` (cumulative ms).

    ``kitaru``: kitaru's own modules; ``packages``: top-level packages imported
    on the way (their first import), which includes what ``python -c pass``
    already imports.
    """
    _, stderr = _run_python("import kitaru", "-X", "importtime")
    own: list[dict[str, Any]] = []
    packages: list[dict[str, Any]] = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if match is None:
            continue
        module = match.group(3)
        row = {"module": module, "ms": int(match.group(2)) / 1000}
        if module.split(".")[0] == "kitaru":
            own.append(row)
        elif "." not in module:
            packages.append(row)
    return {
        "kitaru": sorted(own, key=lambda r: r["ms"], reverse=True)[:top],
        "packages": sorted(packages, key=lambda r: r["ms"], reverse=True)[:top],
    }


def bench_import(ctx: Context) -> list[Result]:
    runs = ctx.settings.import_runs
    _run_python("import kitaru")  # warm-up: bytecode caches, disk cache
    _run_python("pass")
    bare: list[float] = []
    with_kitaru: list[float] = []
    for _ in range(runs):
        bare.append(_run_python("pass")[0])
        with_kitaru.append(_run_python("import kitaru")[0])
    net = median(with_kitaru) - median(bare)
    return [
        Result(
            "7 import",
            'python -c "import kitaru" minus python -c "pass"',
            net * MS,
            "ms",
            target=Target("<", 150.0),
            samples=[(k - b) * MS for k, b in zip(with_kitaru, bare, strict=True)],
            details={
                "runs": runs,
                "import_kitaru_ms": median(with_kitaru) * MS,
                "bare_python_ms": median(bare) * MS,
                "slowest_imports_ms": _import_profile(),
            },
        )
    ]


# -- registry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Benchmark:
    """A named benchmark: async ones run under ``anyio.run`` on asyncio."""

    name: str
    title: str
    fn: Callable[[Context], Any]
    is_async: bool = True
    #: Left out of ``--quick`` unless named with ``--only``.
    slow: bool = False


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("sequential", "1. sequential checkpoints on SQLite", bench_sequential_sqlite),
        Benchmark("concurrent", "2. concurrent flows on SQLite", bench_concurrent_sqlite),
        Benchmark("memory", "3. sequential and concurrent on memory://", bench_memory),
        Benchmark("short-flows", "4. many short flows on SQLite", bench_short_flows),
        Benchmark("recovery", "5. recovery and rehydration", bench_recovery),
        Benchmark("storage", "6. bytes per checkpoint row", bench_storage),
        Benchmark("import", "7. import time", bench_import, is_async=False),
        Benchmark(
            "waiting-10k",
            "8. 10,000 waiting runs: memory, messages/s",
            bench_waiting_10k,
            is_async=False,
        ),
        Benchmark(
            "waiting-100k",
            "9. 100,000 waiting runs: memory",
            bench_waiting_100k,
            is_async=False,
            slow=True,
        ),
        Benchmark("hot-wake", "10. wake latency of a resident waiting run", bench_hot_wake),
        Benchmark("cold-wake", "11. wake latency of an evicted run (SQLite)", bench_cold_wake),
        Benchmark("cli", "12. kitaru runs / show on 100,000 runs", bench_cli, is_async=False),
    )
}
