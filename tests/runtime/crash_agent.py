"""A durable agent run in a subprocess so that ``tests/runtime/test_crash.py`` can SIGKILL it.

This is a script, not a test module (pytest collects ``test_*.py`` only)::

    python tests/runtime/crash_agent.py sqlite:///<dir>/kitaru.db [options]

The flow has ``STEPS`` sequential checkpoints: ``async def`` ones and plain
``def`` ones (which run in worker threads). It always starts or resumes run
``crash-1``; a second invocation after a crash resumes the run through
``rt.start(..., run_id="crash-1")`` (or, with ``--register``, already when the
runtime opens). Without a pause option the script awaits the result, prints it
as JSON on stdout and exits 0.

Files, all next to the database file:

* ``artifacts/``: the artifact store (step 3's value is large and goes there).
* ``effects.log``: one line ``"step<i> <pid>"`` per execution of a checkpoint
  body, appended, flushed and fsynced as the body's first action, so an
  execution that is killed before its commit is counted too.
* ``paused``: written (fsynced, then atomically renamed into place, holding
  ``"<pid> <point>"``) when the process reaches its pause point; the process
  then sleeps until it is killed.

Pause options (at most one):

* ``--pause-at K``: inside the body of checkpoint K, right after its log
  line, i.e. after checkpoints ``0..K-1`` committed and before K commits.
  ``--pause-at K+1`` is therefore also "just after K committed, with K+1's
  body started".
* ``--pause-after K``: in the flow's own code, after checkpoint K returned
  (so committed) and before K+1 is called: no checkpoint body is in flight.

``--sync-flow`` runs the same steps from a plain ``def`` flow (the flow body in
one worker thread, its sync checkpoints in others), so ``--sync-flow
--pause-at 3`` kills the process inside a thread-run checkpoint called from a
thread-run flow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pydantic

import kitaru

RUN_ID = "crash-1"
STEPS = 6
#: Which steps are plain ``def`` checkpoints (run in a worker thread).
SYNC_STEPS = frozenset({1, 3})
#: Step whose value is larger than the inline threshold (64 KiB): an artifact.
BIG_STEP = 3
BIG_NOTE = 70_000
SEED = 1


@dataclass
class Settings:
    """What this process was asked to do; read by the flow and checkpoint bodies."""

    log: Path
    marker: Path
    pause_at: int | None = None
    pause_after: int | None = None


settings: Settings | None = None


def _settings() -> Settings:
    assert settings is not None, "main() sets the settings before the runtime opens"
    return settings


def _append_synced(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_marker(point: str) -> None:
    """Say "paused at ``point``": durable first, then visible all at once."""
    marker = _settings().marker
    tmp = marker.with_name(marker.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {point}\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(marker)


def _pause_thread(point: str) -> None:
    """Block this (worker or flow) thread until the process is killed."""
    _write_marker(point)
    while True:
        time.sleep(3600)


async def _pause_async(point: str) -> None:
    _write_marker(point)
    await anyio.sleep_forever()


def _executed(i: int) -> None:
    """Count one execution of step ``i``'s body (before it can be interrupted)."""
    _append_synced(_settings().log, f"step{i} {os.getpid()}")


class Step(pydantic.BaseModel):
    """A checkpoint's value; ``value`` chains, so a wrong replay changes the result."""

    index: int
    value: int
    note: str


def _compute(i: int, previous: int) -> Step:
    note = "x" * BIG_NOTE if i == BIG_STEP else f"note {i}"
    return Step(index=i, value=previous * 3 + i, note=note)


@kitaru.checkpoint
async def async_step(i: int, previous: int) -> Step:
    """An ``async def`` checkpoint: runs on the event loop."""
    _executed(i)
    if _settings().pause_at == i:
        await _pause_async(f"in step{i}")
    await anyio.lowlevel.checkpoint()  # yield to the loop like real async work
    return _compute(i, previous)


@kitaru.checkpoint
def sync_step(i: int, previous: int) -> Step:
    """A plain ``def`` checkpoint: runs in a worker thread."""
    _executed(i)
    if _settings().pause_at == i:
        _pause_thread(f"in step{i} (worker thread)")
    return _compute(i, previous)


def _summary(steps: list[Step]) -> dict[str, Any]:
    return {"values": [s.value for s in steps], "note_chars": sum(len(s.note) for s in steps)}


@kitaru.flow(name="crash_agent")
async def agent(steps: int, seed: int) -> dict[str, Any]:
    """Call the steps in order, each fed the previous step's value."""
    done: list[Step] = []
    previous = seed
    for i in range(steps):
        step = sync_step if i in SYNC_STEPS else async_step
        result: Step = await step(i, previous)
        done.append(result)
        previous = result.value
        if _settings().pause_after == i:
            await _pause_async(f"after step{i}")
    return _summary(done)


@kitaru.flow(name="crash_agent_sync")
def agent_sync(steps: int, seed: int) -> dict[str, Any]:
    """The same steps from a plain ``def`` flow, whose body runs in a worker thread."""
    done: list[Step] = []
    previous = seed
    for i in range(steps):
        step = sync_step if i in SYNC_STEPS else async_step
        result: Step = step(i, previous)
        done.append(result)
        previous = result.value
        if _settings().pause_after == i:
            _pause_thread(f"after step{i} (flow thread)")
    return _summary(done)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("store", help="sqlite:///<path> of the run store file")
    pause = parser.add_mutually_exclusive_group()
    pause.add_argument("--pause-at", type=int, metavar="K", help="pause inside checkpoint K")
    pause.add_argument(
        "--pause-after", type=int, metavar="K", help="pause in flow code after K commits"
    )
    parser.add_argument("--sync-flow", action="store_true", help="use the plain-def flow")
    parser.add_argument(
        "--register",
        action="store_true",
        help="pass the flow to kitaru.runtime(flows=...) so recovery starts on open",
    )
    args = parser.parse_args(argv)
    if not args.store.startswith("sqlite:///"):
        parser.error("the store must be a sqlite:///<path> URL")
    for k in (args.pause_at, args.pause_after):
        if k is not None and not 0 <= k < STEPS:
            parser.error(f"pause points are step indexes 0..{STEPS - 1}")
    return args


async def _run(args: argparse.Namespace, folder: Path) -> Any:
    flow = agent_sync if args.sync_flow else agent
    async with kitaru.runtime(
        store=args.store,
        artifacts=str(folder / "artifacts"),
        flows=[flow] if args.register else [],
    ) as rt:
        handle = await rt.start(flow, STEPS, SEED, run_id=RUN_ID)
        return await handle.result()


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) ``crash-1``; print its result as JSON."""
    global settings
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    folder = Path(args.store.removeprefix("sqlite:///")).parent
    settings = Settings(
        log=folder / "effects.log",
        marker=folder / "paused",
        pause_at=args.pause_at,
        pause_after=args.pause_after,
    )
    result = anyio.run(_run, args, folder)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
