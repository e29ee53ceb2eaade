"""Waits and timers across processes on one SQLite file: real subprocesses, real kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

import kitaru

pytestmark = pytest.mark.slow

AGENT = textwrap.dedent(
    """
    import asyncio, sys, kitaru

    @kitaru.flow
    async def sleeper() -> str:
        await kitaru.sleep(2)
        return "woke"

    @kitaru.flow
    async def listener() -> str:
        return await kitaru.wait(str)

    FLOWS = {"sleeper": sleeper, "listener": listener}

    async def main(store, mode, name):
        async with kitaru.runtime(store=store, flows=list(FLOWS.values())) as rt:
            if mode == "start":
                await rt.start(FLOWS[name], run_id=name)
                print("started", flush=True)
                await asyncio.sleep(3600)
            print(await rt.result(name), flush=True)

    asyncio.run(main(*sys.argv[1:]))
    """
)


def spawn(tmp: Path, *args: str) -> subprocess.Popen[str]:
    script = tmp / "agent.py"
    script.write_text(AGENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent.parent)}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
    )


def wait_for_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == expected, line


def test_sleep_survives_a_kill_and_wakes_at_once_after_the_deadline(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'k.db'}"
    with spawn(tmp_path, store, "start", "sleeper") as proc:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGKILL)
        proc.wait()  # reaped: its lease now visibly belongs to a dead process
    time.sleep(3)  # past the 2 s deadline while no process is up
    begun = time.monotonic()
    with spawn(tmp_path, store, "resume", "sleeper") as again:
        out, _ = again.communicate(timeout=30)
    assert out.strip() == "woke"
    # Interpreter start plus kitaru import is most of this; the wake itself is immediate.
    assert time.monotonic() - begun < 10


@pytest.mark.anyio
async def test_message_from_another_process_wakes_the_host_quickly(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'k.db'}"
    host = spawn(tmp_path, store, "start", "listener")
    try:
        await anyio.to_thread.run_sync(wait_for_line, host, "started")

        async with kitaru.runtime(store=store) as rt:  # another process's view of the store
            with anyio.fail_after(10):
                while (await rt.get_run("listener")).status != "waiting":
                    await anyio.sleep(0.02)
            sent = time.monotonic()
            await rt.send("listener", "hello from elsewhere")
            with anyio.fail_after(10):
                while (await rt.get_run("listener")).status != "completed":
                    await anyio.sleep(0.01)
            elapsed = time.monotonic() - sent
            assert (await rt.get_run("listener")).output == "hello from elsewhere"
        assert elapsed < 0.5
    finally:
        host.kill()
        host.wait()
        assert host.stdout is not None
        host.stdout.close()


def test_a_waiting_run_survives_a_kill_and_takes_the_answer_sent_meanwhile(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'k.db'}"
    with spawn(tmp_path, store, "start", "listener") as proc:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    async def answer() -> None:  # a third process's view: nobody hosts the run now
        async with kitaru.runtime(store=store) as rt:
            assert (await rt.get_run("listener")).status in ("running", "waiting")
            await rt.send("listener", "kept in the mailbox")

    anyio.run(answer)
    with spawn(tmp_path, store, "resume", "listener") as again:
        out, _ = again.communicate(timeout=30)
    assert out.strip() == "kept in the mailbox"
