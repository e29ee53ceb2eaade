"""Driving the real ``kitaru`` command in subprocesses against SQLite stores.

Tests here are plain (sync) functions: runs are prepared in-process with
``anyio.run`` and ``kitaru.runtime(store=...)`` using the flows of
``cli_agents.py``, then the command runs as ``python -m kitaru`` with
``--store``/``--artifacts`` pointing at the same files. A command that takes
~0.3 s is mostly interpreter start and ``import kitaru``; independent commands
run side by side with :meth:`Cli.run_many`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

import kitaru

REPO = Path(__file__).resolve().parents[2]
AGENTS = Path(__file__).with_name("cli_agents.py")
#: Generous: a cold interpreter start on a busy 2-core machine can take ~1 s.
TIMEOUT = 30.0


@dataclass(frozen=True)
class Done:
    """What a finished command left: exit status and both streams."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self
        return json.loads(self.stdout)

    def ok(self) -> Done:
        assert self.returncode == 0, f"{self.args} failed:\n{self.stderr}"
        return self

    def error(self, *fragments: str) -> str:
        """Assert the expected-error contract: exit 2, one stderr line, no traceback."""
        assert self.returncode == 2, self
        assert self.stdout == "", self
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("kitaru: error: "), lines
        for fragment in fragments:
            assert fragment in lines[0], lines[0]
        return lines[0]


def child_env() -> dict[str, str]:
    """The environment of a child: this checkout of kitaru, no KITARU_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


class Cli:
    """One store (SQLite file + artifact folder) and the command pointed at it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"sqlite:///{folder / 'kitaru.db'}"
        self.artifacts = str(folder / "artifacts")

    def command(self, *args: str, python: Sequence[str] = ()) -> list[str]:
        return [
            sys.executable,
            *python,
            "-m",
            "kitaru",
            "--store",
            self.url,
            "--artifacts",
            self.artifacts,
            *args,
        ]

    def run(self, *args: str, cwd: Path | None = None) -> Done:
        command = self.command(*args)
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=cwd or self.folder,
            timeout=TIMEOUT,
            check=False,
        )
        return Done(command, done.returncode, done.stdout, done.stderr)

    def run_many(self, *commands: Sequence[str]) -> list[Done]:
        """Several independent commands at once (they only read, or touch different runs)."""
        procs = []
        for args in commands:
            command = self.command(*args)
            procs.append(
                (
                    command,
                    subprocess.Popen(
                        command,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env=child_env(),
                        cwd=self.folder,
                    ),
                )
            )
        results = []
        for command, proc in procs:
            with proc:
                out, err = proc.communicate(timeout=TIMEOUT)
            results.append(Done(command, proc.returncode, out, err))
        return results

    def start_script(self, flow: str, run_id: str, *args: str) -> str:
        """Start a run in a separate process that exits once the run is suspended."""
        done = subprocess.run(
            [sys.executable, str(AGENTS), self.url, self.artifacts, "start", flow, run_id, *args],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=self.folder,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def call(self, fn: Callable[[kitaru.Runtime], Awaitable[Any]], **kwargs: Any) -> Any:
        """Run ``await fn(rt)`` on an in-process runtime on this store."""

        async def go() -> Any:
            async with kitaru.runtime(store=self.url, artifacts=self.artifacts, **kwargs) as rt:
                return await fn(rt)

        return anyio.run(go)

    def info(self, run_id: str) -> kitaru.RunInfo:
        async def get(rt: kitaru.Runtime) -> kitaru.RunInfo:
            return await rt.get_run(run_id)

        info: kitaru.RunInfo = self.call(get)
        return info

    def wait_for(self, run_id: str, status: str, timeout: float = 20.0) -> kitaru.RunInfo:
        """Poll the store until the run has ``status``."""

        async def poll(rt: kitaru.Runtime) -> kitaru.RunInfo:
            with anyio.fail_after(timeout):
                while (info := await rt.get_run(run_id)).status != status:
                    await anyio.sleep(0.05)
            return info

        info: kitaru.RunInfo = self.call(poll)
        return info

    def messages(self, run_id: str, topic: str = "input") -> list[Any]:
        """Unconsumed messages of a run on ``topic``, decoded."""

        async def read(rt: kitaru.Runtime) -> list[Any]:
            found = await rt.store.messages_after(0, limit=1000)
            return [json.loads(m.payload) for m in found if m.run_id == run_id and m.topic == topic]

        result: list[Any] = self.call(read)
        return result

    def run_count(self) -> int:
        async def count(rt: kitaru.Runtime) -> int:
            return len(await rt.list_runs(limit=1000))

        result: int = self.call(count)
        return result


class Worker:
    """A ``kitaru worker`` subprocess; its stderr goes to a file that tests read."""

    def __init__(self, cli: Cli, *modules: str, cwd: Path, python: Sequence[str] = ()) -> None:
        self.log = cwd / f"worker-{time.monotonic_ns()}.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            cli.command("worker", *modules, python=python),
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env=child_env(),
            cwd=cwd,
        )

    def text(self) -> str:
        return self.log.read_text()

    def wait_started(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while "hosting" not in self.text():
            assert self.proc.poll() is None, f"worker exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"worker did not start:\n{self.text()}"
            time.sleep(0.02)
        return self.text()

    def stop(self, signum: int, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``signum``; return the exit status and how long the exit took."""
        began = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - began

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()
