"""The flow that ``test_many_workers.py`` runs on several worker processes, and its sender.

Not a test module (pytest collects ``test_*.py`` only). Two uses:

* ``kitaru --store URL worker tests/postgres/many_workers_agent.py`` hosts
  :func:`job` in a worker process;
* ``python tests/postgres/many_workers_agent.py send URL RUNS DELAY FOLDER``
  is the process that answers the runs' waits: it sends run ``mw-<k>`` the
  value ``k`` once the run has been waiting for ``DELAY`` seconds, until all
  ``RUNS`` runs got theirs, then exits. While a file ``hold`` exists in
  ``FOLDER`` it sends nothing; it says so by creating ``held`` there.

Each :func:`step` body first appends ``"<run> <position> <pid> <unix time>"``
to ``<pid>.log`` in the folder named by ``MANY_WORKERS_EFFECTS``, with one
``write`` on an ``O_APPEND`` descriptor, so an execution that is killed before
its commit is counted too (SIGKILL loses nothing already written).

``MANY_WORKERS_HOST``, when set, is the host name in this process's lease-owner
ids, as if each worker ran on a machine of its own: another worker can then
take its runs over only when their leases expire, never by seeing its process
gone.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio

import kitaru
from kitaru.actors import _directory

#: Seconds each checkpoint body takes, so a kill finds runs inside one.
STEP_SECONDS = 0.1
#: Journal positions of the checkpoints; the wait is at position 3.
BEFORE_WAIT = (0, 1, 2)
AFTER_WAIT = (4, 5)
WAIT_POSITION = 3
FLOW = "many_workers_job"

_fake_host = os.environ.get("MANY_WORKERS_HOST")
if _fake_host:
    _directory._HOST = _fake_host

_effects_fd: int | None = None


def run_id(k: int) -> str:
    """The id of the ``k``-th run."""
    return f"mw-{k:03d}"


def expected_output(k: int) -> int:
    """What run ``k`` returns once it got the value ``k``."""
    return sum(BEFORE_WAIT) + sum(AFTER_WAIT) + k


def _record(run: str, position: int) -> None:
    global _effects_fd
    if _effects_fd is None:
        folder = os.environ["MANY_WORKERS_EFFECTS"]
        path = os.path.join(folder, f"{os.getpid()}.log")
        _effects_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_effects_fd, f"{run} {position} {os.getpid()} {time.time():.6f}\n".encode())


@kitaru.checkpoint
async def step(run: str, position: int) -> int:
    """Count this execution, then take a while."""
    _record(run, position)
    await anyio.sleep(STEP_SECONDS)
    return position


@kitaru.flow(name=FLOW)
async def job(run: str) -> int:
    """Three checkpoints, a wait for an int, two more checkpoints."""
    total = 0
    for position in BEFORE_WAIT:
        total += await step(run, position)
    total += await kitaru.wait(int, question=f"value for {run}?")
    for position in AFTER_WAIT:
        total += await step(run, position)
    return total


async def send_all(store: str, runs: int, delay: float, folder: Path) -> None:
    """Answer run ``k`` with ``k`` once it waited ``delay`` s; return when all were answered."""
    pending = {run_id(k): k for k in range(runs)}
    hold, held = folder / "hold", folder / "held"
    async with kitaru.runtime(store=store) as rt:  # hosts no flow
        while pending:
            if hold.exists():
                held.touch()
                while hold.exists():
                    await anyio.sleep(0.005)
            waiting = await rt.store.list_runs(status="waiting", flow=FLOW, limit=runs)
            now = time.time()
            for record in waiting:
                if record.id in pending and now - record.updated_at >= delay:
                    value = pending.pop(record.id)
                    await rt.send(record.id, value, key=f"value-{record.id}")
            await anyio.sleep(0.02)


if __name__ == "__main__":
    _, command, url, count, pause, folder = sys.argv
    assert command == "send", command
    anyio.run(send_all, url, int(count), float(pause), Path(folder))
