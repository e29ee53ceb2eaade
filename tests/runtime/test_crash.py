"""Real crashes: ``tests/runtime/crash_agent.py`` runs in a subprocess, is SIGKILLed, then resumed.

A crash test starts the agent with a pause option, waits for its marker
file, kills it with SIGKILL at that known point, reaps it (a zombie still
answers ``os.kill(pid, 0)``, so its lease would not look dead), and runs the
agent again to completion. The agent's side-effect log says which process
executed each checkpoint body; it must match the guarantees exactly: a
committed checkpoint never runs again, the one interrupted before its commit
runs once more, later ones run once. Runs take ~0.5 s per subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from anyio.abc import Process

import kitaru

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

SCRIPT = Path(__file__).with_name("crash_agent.py")
REPO = SCRIPT.parent.parent.parent
RUN_ID = "crash-1"
# What crash_agent.py does, restated so the script cannot grade itself: six
# steps, 1 and 3 plain ``def`` (worker threads), step 3's value an artifact.
STEPS = 6
SYNC_STEPS = frozenset({1, 3})
BIG_STEP = 3
EXPECTED = {"values": [3, 10, 32, 99, 301, 908], "note_chars": 70_000 + 5 * len("note 0")}
# Generous: a cold interpreter start on a busy 2-core machine takes ~0.5 s.
TIMEOUT = 20.0


@dataclass(frozen=True)
class Kill:
    """A kill point: inside checkpoint ``step`` (``at``) or in flow code after it (``after``)."""

    where: Literal["at", "after"]
    step: int

    @property
    def flags(self) -> list[str]:
        return [f"--pause-{self.where}", str(self.step)]

    @property
    def committed(self) -> int:
        """How many checkpoints are committed when the process dies here."""
        return self.step if self.where == "at" else self.step + 1


class Agent:
    """Runs crash_agent.py on one store and reads what the runs left behind."""

    def __init__(self, folder: Path, *flags: str) -> None:
        self.folder = folder
        self.flags = list(flags)
        self.url = f"sqlite:///{folder / 'kitaru.db'}"
        self.artifacts = str(folder / "artifacts")
        self.log = folder / "effects.log"
        self.marker = folder / "paused"
        self.launches = 0
        # The child must import this checkout of kitaru, whatever is installed.
        path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    async def _open(self, *extra: str) -> tuple[Process, Path, Path]:
        self.launches += 1
        out = self.folder / f"agent-{self.launches}.out"
        err = self.folder / f"agent-{self.launches}.err"
        command = [sys.executable, str(SCRIPT), self.url, *self.flags, *extra]
        # Files, not pipes: nothing has to drain them while the child runs.
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=self.folder,
                env=self.env,
            )
        return process, out, err

    def _paused(self, pid: int) -> bool:
        # The marker is renamed into place whole; a stale one names an older pid.
        try:
            return self.marker.read_text().split()[0] == str(pid)
        except FileNotFoundError:
            return False

    async def crash(self, kill: Kill, *extra: str) -> int:
        """Run the agent until it pauses at ``kill``, SIGKILL and reap it; return its pid."""
        process, _, err = await self._open(*kill.flags, *extra)
        # Leaving ``async with`` early (a failure, a pytest timeout) kills the child too.
        async with process:
            with anyio.move_on_after(TIMEOUT):
                while process.returncode is None and not self._paused(process.pid):
                    await anyio.sleep(0.02)
            paused = self._paused(process.pid)
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            # Reap it, so the next runtime sees its lease owner as dead.
            await process.wait()
        if not paused:
            pytest.fail(
                f"agent did not pause at {kill} within {TIMEOUT} s "
                f"(exit code {process.returncode}):\n{err.read_text()}"
            )
        assert process.returncode == -signal.SIGKILL, err.read_text()
        return process.pid

    async def finish(self, *extra: str) -> tuple[int, Any]:
        """Run the agent to completion; return its pid and the result it printed."""
        process, out, err = await self._open(*extra)
        async with process:
            with anyio.move_on_after(TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
                await process.wait()
                pytest.fail(f"agent did not finish within {TIMEOUT} s:\n{err.read_text()}")
        assert process.returncode == 0, err.read_text()
        return process.pid, json.loads(out.read_text())

    def executions(self) -> dict[str, list[int]]:
        """Step name -> pids of the processes that started its body, in order."""
        runs: dict[str, list[int]] = {f"step{i}": [] for i in range(STEPS)}
        for line in self.log.read_text().splitlines():
            name, pid = line.split()
            runs[name].append(int(pid))
        return runs

    async def stored(self) -> kitaru.RunInfo:
        """The run as the store has it, read in-process (this runtime hosts no flows)."""
        async with kitaru.runtime(store=self.url, artifacts=self.artifacts) as rt:
            return await rt.get_run(RUN_ID)


def expected_executions(kills: list[tuple[int, Kill]], final_pid: int) -> dict[str, list[int]]:
    """Who must have run each step under the guarantees, given the kills in order.

    A killed process ran every step from the first uncommitted one up to its
    kill point; the next process starts again from the first uncommitted one.
    """
    runs: dict[str, list[int]] = {f"step{i}": [] for i in range(STEPS)}
    committed = 0
    for pid, kill in kills:
        for i in range(committed, kill.step + 1):
            runs[f"step{i}"].append(pid)
        committed = kill.committed
    for i in range(committed, STEPS):
        runs[f"step{i}"].append(final_pid)
    return runs


async def check_after_crash(agent: Agent, pid: int, kill: Kill) -> None:
    """The dead process's commits are durable and its lease is still on the run."""
    info = await agent.stored()
    assert info.status == "running"
    assert [c.position for c in info.checkpoints] == list(range(kill.committed))
    assert info.owner is not None and info.owner.split("/")[1] == str(pid)


async def check_completed(agent: Agent, result: Any) -> None:
    """The result is right and the journal holds each step once, on its first attempt."""
    assert result == EXPECTED
    info = await agent.stored()
    assert info.status == "completed"
    assert info.output == EXPECTED
    assert info.owner is None
    journal = [(c.position, c.name, c.status, c.attempts) for c in info.checkpoints]
    assert journal == [
        (i, "sync_step" if i in SYNC_STEPS else "async_step", "completed", 1) for i in range(STEPS)
    ]
    assert info.checkpoints[BIG_STEP].artifact is not None


async def test_uninterrupted_run_executes_every_step_once(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    pid, result = await agent.finish()
    assert agent.executions() == expected_executions([], pid)
    await check_completed(agent, result)


@pytest.mark.parametrize(
    ("flags", "kill", "resume_flags"),
    [
        pytest.param([], Kill("at", 0), [], id="in-first-checkpoint"),
        pytest.param([], Kill("at", 1), [], id="in-sync-checkpoint-thread"),
        pytest.param([], Kill("at", 4), ["--register"], id="in-middle-checkpoint"),
        pytest.param([], Kill("at", STEPS - 1), [], id="in-last-checkpoint"),
        pytest.param([], Kill("after", 3), [], id="in-flow-code-after-commit"),
        pytest.param(
            ["--sync-flow"], Kill("at", 3), ["--register"], id="sync-flow-in-sync-checkpoint"
        ),
    ],
)
async def test_sigkill_then_resume(
    tmp_path: Path, flags: list[str], kill: Kill, resume_flags: list[str]
) -> None:
    agent = Agent(tmp_path, *flags)
    crashed = await agent.crash(kill)
    await check_after_crash(agent, crashed, kill)

    pid, result = await agent.finish(*resume_flags)

    runs = agent.executions()
    assert runs == expected_executions([(crashed, kill)], pid)
    interrupted = kill.step if kill.where == "at" else None
    assert {name: len(pids) for name, pids in runs.items()} == {
        f"step{i}": 2 if i == interrupted else 1 for i in range(STEPS)
    }
    await check_completed(agent, result)


async def test_two_sigkills_in_a_row_then_resume(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    first_kill, second_kill = Kill("at", 1), Kill("at", 4)
    first = await agent.crash(first_kill)
    await check_after_crash(agent, first, first_kill)
    # This one resumes the run while its runtime opens, then dies in step 4.
    second = await agent.crash(second_kill, "--register")
    await check_after_crash(agent, second, second_kill)

    pid, result = await agent.finish()

    runs = agent.executions()
    assert runs == expected_executions([(first, first_kill), (second, second_kill)], pid)
    assert {name: len(pids) for name, pids in runs.items()} == {
        f"step{i}": 2 if i in (1, 4) else 1 for i in range(STEPS)
    }
    await check_completed(agent, result)


async def test_two_workers_racing_to_resume_run_it_once(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    kill = Kill("at", 2)
    crashed = await agent.crash(kill)
    # Both claim the dead owner's run at once; the lease lets only one host it
    # and the other waits for the result through the store.
    finished: list[tuple[int, Any]] = []

    async def worker(*flags: str) -> None:
        finished.append(await agent.finish(*flags))

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        tg.start_soon(worker, "--register")

    runs = agent.executions()
    winner = runs[f"step{kill.step}"][-1]
    assert winner in {pid for pid, _ in finished}
    assert runs == expected_executions([(crashed, kill)], winner)
    assert [result for _, result in finished] == [EXPECTED, EXPECTED]
    await check_completed(agent, EXPECTED)
