"""Many workers on one PostgreSQL schema; one of them is SIGKILLed part-way.

Three ``kitaru worker`` processes host :func:`many_workers_agent.job` (three
checkpoints, a wait, two checkpoints). The test creates 300 runs that no live
process hosts (as ``kitaru replay`` does), in waves, so the workers' recovery
sweeps split them; a fourth process answers each run's wait half a second
after the run starts waiting. Once one worker holds both runs inside a
checkpoint and runs waiting for their message, it is SIGKILLed and reaped.

Checked afterwards:

- every run completed with the output its message implies;
- the journal holds each position once (its primary key, and a GROUP BY to be
  sure), in order and completed;
- side-effect counters (each checkpoint body appends one line, before it can
  be interrupted): a checkpoint ran twice only if the killed worker was running
  it when it died (its entry not committed then), at most once per run; every
  such checkpoint ran again elsewhere; a checkpoint committed before the kill
  never ran again;
- the killed worker's runs progressed again on the other workers within the
  lease expiry plus a recovery sweep and a margin (from the kill, or from their
  message when it came later).

Layouts:

- ``one-machine``: survivors see that the dead process is gone and take its
  runs at their next sweep. The sender pauses just before the kill until every
  message sent is consumed, and resumes right after it.
- ``three-machines``: the workers pose as three machines, so only the leases'
  expiry frees the dead worker's runs. The sender pauses from just before the
  kill until those leases have expired.
- ``three-machines-answered-during-lease``: as above, but the sender never
  pauses, so the dead worker's waiting runs get their messages while its
  leases still hold: the survivors must deliver them once the leases lapse
  (see :class:`StrandedRuns`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from kitaru.storage import RunRecord
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.postgres._url import parse_url, quote_ident
from tests.postgres import _server as pg
from tests.postgres import many_workers_agent as agent

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

AGENT = Path(agent.__file__)
REPO = AGENT.parents[2]
RUNS = 300
WORKERS = 3
#: Short leases, so a takeover by expiry is quick: renewed every LEASE / 3 s,
#: which is also how often each worker sweeps for runs nobody hosts.
LEASE = 3.0
SWEEP = LEASE / 3
#: Allowance for a busy 2-core machine on top of lease expiry and one sweep.
MARGIN = 2.0
#: Runs are created in waves of this many, one wave every WAVE_PAUSE seconds.
WAVE = 25
WAVE_PAUSE = 0.15
#: The sender answers a run this long after it started waiting.
SEND_DELAY = 0.5
#: The victim is chosen once this many runs exist and it holds this many of each kind.
KILL_AFTER = 150
MIN_HELD = 4
STARTUP = 30.0
FINISH = 45.0
CHECKPOINTS = (*agent.BEFORE_WAIT, *agent.AFTER_WAIT)


class StrandedRuns(AssertionError):
    """Waiting runs kept an unconsumed message long after their worker died.

    When a message arrives while a dead worker's lease still holds its run,
    each survivor's claim is refused; the survivors remember the run and look
    again at every sweep (``Runtime.retry_stalled``) until one of them hosts it.
    """


@dataclass
class Sender:
    """The process that answers the runs' waits, and its pause switch."""

    process: Process
    folder: Path
    err: Path

    async def hold(self) -> None:
        """Return once the sender has paused between two sends."""
        (self.folder / "hold").touch()
        with anyio.fail_after(10):
            while not (self.folder / "held").exists():
                assert self.process.returncode is None, self.err.read_text()
                await anyio.sleep(0.005)

    def release(self) -> None:
        (self.folder / "held").unlink(missing_ok=True)
        (self.folder / "hold").unlink(missing_ok=True)


@dataclass
class Worker:
    """One worker subprocess and what it printed."""

    index: int
    process: Process
    out: Path
    err: Path
    owner: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def started(self) -> bool:
        for line in self.out.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:  # being written
                continue
            if event.get("event") == "started":
                self.owner = event["owner"]
                return True
        return False

    def log(self) -> str:
        return self.err.read_text()[-4000:]


@dataclass
class Kill:
    """What the test knew when it killed the victim."""

    victim: Worker
    #: Unix time right after the victim was reaped.
    at: float
    #: Active runs the victim held just before the kill: run id -> status.
    held: dict[str, str]
    #: (run, position) journal entries committed once the victim's connections were gone.
    committed: set[tuple[str, int]] = field(default_factory=set)


class Db:
    """Direct queries on the test schema's tables (what the store wrote, unfiltered)."""

    def __init__(self, conn: Any, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.s = quote_ident(schema)

    async def held(self) -> dict[str, dict[str, list[str]]]:
        """owner -> status -> run ids, for active runs that have an owner."""
        rows = await self.conn.fetch(
            f"SELECT owner, status, id FROM {self.s}.runs WHERE owner IS NOT NULL "
            "AND status IN ('running', 'waiting')"
        )
        held: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            held[row["owner"]][row["status"]].append(row["id"])
        return held

    async def statuses(self) -> Counter[str]:
        rows = await self.conn.fetch(f"SELECT status, count(*) FROM {self.s}.runs GROUP BY 1")
        return Counter({row[0]: row[1] for row in rows})

    async def committed(self, started_before: float) -> set[tuple[str, int]]:
        """Completed journal entries of calls that began before ``started_before``."""
        rows = await self.conn.fetch(
            f"SELECT run_id, position FROM {self.s}.journal WHERE status = 'completed' "
            "AND started_at < $1",
            started_before,
        )
        return {(row[0], row[1]) for row in rows}

    async def backends(self, application_name: str) -> int:
        found: int = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
            f"{application_name}%",
        )
        return found

    async def unconsumed(self) -> int:
        found: int = await self.conn.fetchval(
            f"SELECT count(*) FROM {self.s}.messages WHERE NOT consumed"
        )
        return found

    async def lease_held(self, owner: str) -> bool:
        """Whether some run's lease of ``owner`` has not expired yet."""
        until = await self.conn.fetchval(
            f"SELECT max(lease_until) FROM {self.s}.runs WHERE owner = $1", owner
        )
        return until is not None and until >= time.time()

    async def stranded(self) -> list[dict[str, Any]]:
        """Waiting runs with an unconsumed message, oldest message first."""
        rows = await self.conn.fetch(
            f"SELECT r.id, r.owner, r.lease_until, m.created_at FROM {self.s}.runs r "
            f"JOIN {self.s}.messages m ON m.run_id = r.id AND NOT m.consumed "
            "WHERE r.status = 'waiting' ORDER BY m.created_at"
        )
        return [dict(row) for row in rows]


def child_env(effects: Path, host: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["KITARU_LEASE_SECONDS"] = str(LEASE)
    # Waiting runs stay in their worker's memory (and under its lease) until answered.
    env["KITARU_IDLE_GRACE"] = "60"
    env["MANY_WORKERS_EFFECTS"] = str(effects)
    if host is not None:
        env["MANY_WORKERS_HOST"] = host
    return env


async def spawn(
    command: list[str], folder: Path, name: str, env: dict[str, str]
) -> tuple[Process, Path, Path]:
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    # Files, not pipes: nothing has to drain them while the children run.
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=folder, env=env
        )
    return process, out, err


async def create_runs(url: str) -> None:
    """Create the runs in waves, leased to nobody: the workers' sweeps pick them up."""
    async with PostgresStore(url) as store:
        for first in range(0, RUNS, WAVE):
            for k in range(first, min(first + WAVE, RUNS)):
                now = time.time()
                run = RunRecord(
                    id=agent.run_id(k),
                    flow=agent.FLOW,
                    status="running",
                    created_at=now,
                    updated_at=now,
                    input=agent.job.encode_input((agent.run_id(k),), {}),
                )
                _, created = await store.create_run(run)
                assert created
            await anyio.sleep(WAVE_PAUSE)


async def choose_victim(db: Db, workers: list[Worker]) -> tuple[Worker, dict[str, str]] | None:
    """The worker holding the most runs inside checkpoints and waiting, if enough of both."""
    by_owner = {w.owner: w for w in workers}
    if sum((await db.statuses()).values()) < KILL_AFTER:
        return None
    held = await db.held()
    fewest, owner = max(
        ((min(len(h["running"]), len(h["waiting"])), o) for o, h in held.items() if o in by_owner),
        default=(0, ""),
    )
    if fewest < MIN_HELD:
        return None
    runs = {run: status for status, ids in held[owner].items() for run in ids}
    return by_owner[owner], runs


async def kill_part_way(db: Db, workers: list[Worker], sender: Sender, hold: str) -> Kill:
    """SIGKILL a worker that holds runs inside checkpoints and waiting runs.

    ``hold``: when the sender pauses, from just before the kill (once every
    message sent is consumed) until right after it (``"kill"``) or until the
    victim's leases expired (``"expiry"``); or ``"never"``.
    """
    with anyio.fail_after(STARTUP):
        while True:
            chosen = await choose_victim(db, workers)
            if chosen is not None and hold != "never":
                await sender.hold()
                while await db.unconsumed():
                    await anyio.sleep(0.005)
                chosen = await choose_victim(db, workers)  # as things are now
                if chosen is None:
                    sender.release()
            if chosen is not None:
                break
            await anyio.sleep(0.02)
    victim, runs = chosen
    victim.process.send_signal(signal.SIGKILL)
    await victim.process.wait()  # reaped: on this machine, its pid is now visibly gone
    kill = Kill(victim, time.time(), runs)
    # Statements the victim sent just before dying end with its server
    # backends; what is committed after that is the state at the kill (less
    # what the others may have done since: calls they began after it).
    with anyio.fail_after(10):
        while await db.backends(f"mw-worker-{victim.index}"):
            await anyio.sleep(0.005)
    kill.committed = await db.committed(started_before=kill.at)
    if hold == "expiry":
        assert victim.owner is not None
        with anyio.fail_after(LEASE + MARGIN):
            while await db.lease_held(victim.owner):
                await anyio.sleep(0.01)
    sender.release()
    return kill


async def wait_for_completion(db: Db, workers: list[Worker], kill: Kill) -> None:
    limit = LEASE + SWEEP + MARGIN
    with anyio.move_on_after(FINISH) as scope:
        while (statuses := await db.statuses())["completed"] < RUNS:
            for worker in workers:
                if worker is not kill.victim and worker.process.returncode is not None:
                    pytest.fail(f"worker {worker.index} exited:\n{worker.log()}")
            if statuses["failed"] or statuses["cancelled"]:
                pytest.fail(f"runs ended badly: {dict(statuses)}")
            stranded = await db.stranded()
            now = time.time()
            if any(r["created_at"] < now - limit for r in stranded) and now - kill.at > limit:
                raise StrandedRuns(
                    f"{len(stranded)} run(s) still wait {now - kill.at:.1f} s after worker "
                    f"{kill.victim.owner} was killed, with their message unconsumed (the "
                    f"oldest for more than {limit:.0f} s): {stranded[:3]}"
                )
            await anyio.sleep(0.1)
    if scope.cancelled_caught:
        logs = "\n".join(f"--- worker {w.index}\n{w.log()}" for w in workers)
        pytest.fail(f"not all runs completed in {FINISH} s: {dict(statuses)}\n{logs}")


def read_effects(folder: Path) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """(run, position) -> (pid, unix time) of each execution of its body, in time order."""
    runs: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            run, position, pid, at = line.split()
            runs[(run, int(position))].append((int(pid), float(at)))
    for executions in runs.values():
        executions.sort(key=lambda e: e[1])
    return runs


async def check_journal(db: Db) -> None:
    """Each run's journal: positions 0-5 once each, completed, the wait at 3."""
    duplicates = await db.conn.fetch(
        f"SELECT run_id, position, count(*) FROM {db.s}.journal GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert duplicates == []
    unique = await db.conn.fetchval(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = 'journal' AND i.indisunique "
        "AND i.indnkeyatts = 2",
        db.schema,
    )
    assert unique >= 1  # (run_id, position) is the primary key
    rows = await db.conn.fetch(
        f"SELECT run_id, position, kind, status FROM {db.s}.journal ORDER BY run_id, position"
    )
    journals: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for row in rows:
        journals[row[0]].append((row[1], row[2], row[3]))
    expected = [
        (p, "wait" if p == agent.WAIT_POSITION else "checkpoint", "completed") for p in range(6)
    ]
    assert {run: j for run, j in journals.items() if j != expected} == {}
    assert len(journals) == RUNS


async def check_outputs(url: str) -> None:
    async with PostgresStore(url) as store:
        records = await store.list_runs(flow=agent.FLOW, limit=RUNS + 1)
    assert len(records) == RUNS
    wrong = {
        r.id: (r.status, r.output, r.owner)
        for r in records
        if (r.status, r.owner) != ("completed", None)
        or json.loads(r.output or b"null") != agent.expected_output(int(r.id[3:]))
    }
    assert wrong == {}


def check_effects(
    effects: dict[tuple[str, int], list[tuple[int, float]]], kill: Kill
) -> set[tuple[str, int]]:
    """At-least-once, never after a commit; returns the checkpoints that ran twice."""
    victim = kill.victim.pid
    expected_keys = {(agent.run_id(k), p) for k in range(RUNS) for p in CHECKPOINTS}
    assert set(effects) == expected_keys
    # Bodies the victim started whose entries it never committed: in flight when it died.
    in_flight = {
        key
        for key, executions in effects.items()
        if executions[0][0] == victim and key not in kill.committed
    }
    twice = {key for key, executions in effects.items() if len(executions) > 1}
    problems = {
        key: executions
        for key, executions in effects.items()
        if len(executions) > 2
        or (key in kill.committed and len(executions) > 1)
        or (len(executions) == 2 and (executions[0][0] != victim or executions[1][0] == victim))
        or any(at > kill.at for pid, at in executions if pid == victim)
    }
    assert problems == {}
    # Each interrupted checkpoint ran again elsewhere (its result was never recorded) ...
    assert twice == in_flight
    # ... and a run had at most one checkpoint in flight.
    per_run = Counter(run for run, _ in twice)
    assert max(per_run.values(), default=0) <= 1
    return twice


async def resume_delays(
    db: Db, effects: dict[tuple[str, int], list[tuple[int, float]]], kill: Kill
) -> dict[str, float]:
    """Seconds from the kill (or the run's later message) to the run's next progress elsewhere.

    Progress: a checkpoint body started by another worker, a journal entry
    another activation began after the kill, or the run's completion.
    """
    victim = kill.victim.pid
    delays: dict[str, float] = {}
    for run, status in kill.held.items():
        moments = [
            at
            for (r, _), executions in effects.items()
            if r == run
            for pid, at in executions
            if pid != victim and at > kill.at
        ]
        rows = await db.conn.fetch(
            f"SELECT started_at FROM {db.s}.journal WHERE run_id = $1 AND started_at > $2",
            run,
            kill.at,
        )
        moments += [row[0] for row in rows]
        done = await db.conn.fetchval(
            f"SELECT updated_at FROM {db.s}.runs WHERE id = $1 AND status = 'completed'", run
        )
        moments.append(done)
        since = kill.at
        if status == "waiting":
            sent = await db.conn.fetchval(
                f"SELECT created_at FROM {db.s}.messages WHERE run_id = $1", run
            )
            since = max(since, sent)
        delays[run] = min(moments) - since
    return delays


async def stop(process: Process, signum: signal.Signals = signal.SIGTERM) -> int | None:
    """Send ``signum`` and reap the process; SIGKILL it (and return None) if it lingers."""
    if process.returncode is None:
        process.send_signal(signum)
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
            return None
    await process.aclose()
    return process.returncode


LAYOUTS = [
    pytest.param(1, "kill", id="one-machine"),
    pytest.param(WORKERS, "expiry", id="three-machines"),
    pytest.param(WORKERS, "never", id="three-machines-answered-during-lease"),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("machines", "hold"), LAYOUTS)
async def test_runs_survive_a_worker_killed_part_way(
    postgres_url: str, postgres_server: str, tmp_path: Path, machines: int, hold: str
) -> None:
    began = time.monotonic()
    effects = tmp_path / "effects"
    effects.mkdir()
    db = Db(await pg.admin(postgres_server), parse_url(postgres_url).schema)
    workers: list[Worker] = []
    sender: Sender | None = None
    try:
        for i in range(WORKERS):
            url = f"{postgres_url}&application_name=mw-worker-{i}"
            command = [sys.executable, "-m", "kitaru", "--store", url, "--json", "worker"]
            host = None if machines == 1 else f"machine-{i}"
            env = child_env(effects, host)
            workers.append(Worker(i, *await spawn([*command, str(AGENT)], tmp_path, f"w{i}", env)))
        with anyio.fail_after(STARTUP):
            for worker in workers:
                while not worker.started():
                    assert worker.process.returncode is None, worker.log()
                    await anyio.sleep(0.05)
        started = time.monotonic()
        url = f"{postgres_url}&application_name=mw-sender"
        command = [sys.executable, str(AGENT), "send", url, str(RUNS), str(SEND_DELAY)]
        process, _, err = await spawn(
            [*command, str(tmp_path)], tmp_path, "sender", child_env(effects, None)
        )
        sender = Sender(process, tmp_path, err)
        async with anyio.create_task_group() as tg:
            tg.start_soon(create_runs, postgres_url)
            kill = await kill_part_way(db, workers, sender, hold)
        await wait_for_completion(db, workers, kill)
        finished = time.monotonic()
        with anyio.fail_after(10):
            assert await sender.process.wait() == 0, err.read_text()
        for worker in workers:
            if worker is not kill.victim:
                assert await stop(worker.process) == 0, worker.log()

        await check_journal(db)
        await check_outputs(postgres_url)
        found = read_effects(effects)
        twice = check_effects(found, kill)
        delays = await resume_delays(db, found, kill)
        held = Counter(kill.held.values())
        spans = {
            status: [d for run, d in delays.items() if kill.held[run] == status]
            for status in ("running", "waiting")
        }
        print(
            f"{machines} machine(s): victim held {dict(held)}; {len(twice)} checkpoint(s) ran "
            "twice; resumed after "
            + ", ".join(f"{min(d):.2f}..{max(d):.2f} s ({k})" for k, d in spans.items() if d)
            + f"; runs took {finished - started:.1f} s, test {time.monotonic() - began:.1f} s"
        )
        assert held["running"] >= MIN_HELD and held["waiting"] >= MIN_HELD
        # ``twice`` is usually non-empty (the victim died inside checkpoints), but a
        # kill can land between commits; check_effects has held either way.
        late = {run: round(d, 2) for run, d in delays.items() if d > LEASE + SWEEP + MARGIN}
        assert late == {}
    finally:
        for worker in workers:
            await stop(worker.process, signal.SIGKILL)
        if sender is not None:
            await stop(sender.process, signal.SIGKILL)
        await db.conn.close()
