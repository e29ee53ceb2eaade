"""Timing helpers, result records, the printed table and the JSON report."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = (
    "Context",
    "Result",
    "Settings",
    "Target",
    "atimed",
    "format_table",
    "median",
    "report",
    "scratch_dir",
    "sqlite_url",
)

#: The ``benchmarks`` package folder; reports go to ``results/`` below it.
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work one pass does."""

    quick: bool
    #: Repetitions of each fast measurement (the median is reported).
    reps: int
    #: Subprocess runs per interpreter command in the import benchmark.
    import_runs: int
    #: Checkpoints written by the storage benchmark.
    storage_rows: int

    @classmethod
    def make(cls, *, quick: bool, reps: int | None = None) -> Settings:
        if quick:
            return cls(quick=True, reps=reps or 3, import_runs=5, storage_rows=10_000)
        return cls(quick=False, reps=reps or 7, import_runs=7, storage_rows=10_000)


@dataclass(frozen=True, slots=True)
class Target:
    """A pass condition on a result's value (or on its ratio vs the floor)."""

    op: Literal["<", "<=", ">", ">="]
    bound: float
    on: Literal["value", "ratio"] = "value"

    def holds(self, value: float | None, ratio: float | None) -> bool | None:
        subject = ratio if self.on == "ratio" else value
        if subject is None or math.isnan(subject):
            return None
        return {
            "<": subject < self.bound,
            "<=": subject <= self.bound,
            ">": subject > self.bound,
            ">=": subject >= self.bound,
        }[self.op]

    def describe(self, unit: str) -> str:
        if self.on == "ratio":
            return f"{self.op} {_num(self.bound)}x floor"
        return f"{self.op} {_num(self.bound)} {unit}"


@dataclass(slots=True)
class Result:
    """One row of the table."""

    benchmark: str
    figure: str
    value: float
    unit: str
    target: Target | None = None
    #: value / floor (or floor-relative figure), when a floor applies.
    ratio: float | None = None
    #: What the floor is, e.g. "aiosqlite INSERT+COMMIT: 132 us".
    floor: str | None = None
    #: Raw samples behind the median, in the value's unit.
    samples: list[float] = field(default_factory=list)
    #: Anything else worth keeping in the JSON report.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.holds(self.value, self.ratio)

    @property
    def verdict(self) -> str:
        passed = self.passed
        if passed is None:
            return "info" if self.target is None else "n/a"
        return "PASS" if passed else "FAIL"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else self.target.describe(self.unit)
        data["target_spec"] = None if self.target is None else asdict(self.target)
        data["verdict"] = self.verdict
        return data


@dataclass(slots=True)
class Context:
    """State shared between benchmarks of one pass (the SQLite floor)."""

    settings: Settings
    #: Median seconds of one aiosqlite INSERT + COMMIT (benchmark 1's floor).
    floor_commit_s: float | None = None
    floor_samples: list[float] = field(default_factory=list)
    #: Median seconds of one aiosqlite round trip (``SELECT 1``), for context.
    hop_s: float | None = None
    hop_samples: list[float] = field(default_factory=list)
    #: Whether the floor rows are in the table already.
    floor_reported: bool = False
    #: Run the memory benchmarks in this process (``--profile``) instead of a fresh one.
    in_process: bool = False


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


async def atimed(fn: Callable[[], Awaitable[Any]]) -> float:
    """Seconds ``await fn()`` takes, after a garbage collection."""
    gc.collect()
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


@contextmanager
def scratch_dir(prefix: str = "kitaru-bench-") -> Iterator[Path]:
    """A temporary folder, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sqlite_url(path: Path) -> str:
    """``sqlite:///`` URL of an absolute or relative path."""
    # An absolute path gives the four-slash form ``sqlite:////abs/path.db``.
    return f"sqlite:///{path.as_posix()}"


# -- output -------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(results: Sequence[Result]) -> str:
    header = ("benchmark", "figure", "value", "unit", "target", "ratio vs floor", "result")
    rows = [header]
    for r in results:
        rows.append(
            (
                r.benchmark,
                r.figure,
                _num(r.value),
                r.unit,
                "-" if r.target is None else r.target.describe(r.unit),
                "-" if r.ratio is None else f"{_num(r.ratio)}x",
                r.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 5}  # numbers

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])


def environment() -> dict[str, Any]:
    import aiosqlite

    import kitaru

    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_average": load,
        "sqlite": sqlite3.sqlite_version,
        "aiosqlite": aiosqlite.__version__,
        "kitaru": kitaru.__version__,
    }


def report(
    results: Sequence[Result], settings: Settings, elapsed: float, selected: Sequence[str]
) -> Path:
    """Write ``results/latest.json`` and return its path."""
    out_dir = PACKAGE_DIR / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "settings": asdict(settings),
        "benchmarks": list(selected),
        "elapsed_s": round(elapsed, 2),
        "environment": environment(),
        "summary": {
            "passed": sum(r.passed is True for r in results),
            "failed": sum(r.passed is False for r in results),
            "info": sum(r.passed is None for r in results),
        },
        "results": [r.to_json() for r in results],
    }
    path = out_dir / "latest.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
