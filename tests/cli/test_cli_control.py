"""``kitaru replay``, ``retry`` and ``cancel``; a worker then executes what they left to do."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import anyio
import pytest

import kitaru
from tests.cli.cli_agents import flaky, greet, listener
from tests.cli.support import AGENTS, Cli, Worker

pytestmark = pytest.mark.slow


async def _finished(rt: kitaru.Runtime, flow: kitaru.Flow[..., object], run_id: str) -> None:
    try:
        await (await rt.start(flow, 7, run_id=run_id)).result()
    except kitaru.FlowFailed:
        pass


def _stop(worker: Worker) -> None:
    code, took = worker.stop(signal.SIGTERM)
    assert code == 0, worker.text()
    assert took < 5, took


def test_replay_with_an_override_is_run_by_a_worker(cli: Cli, tmp_path: Path) -> None:
    async def populate(rt: kitaru.Runtime) -> None:
        await (await rt.start(greet, "world", run_id="greet-r")).result()

    cli.call(populate, flows=[greet])
    module = str(AGENTS)
    unknown, untyped, mistyped, too_late = cli.run_many(
        ("replay", "greet-r", "--from", "nope"),
        ("replay", "greet-r", "--set", 'hello="hi"'),
        ("replay", "greet-r", "--set", "hello=42", "--module", module),
        ("replay", "greet-r", "--from", "hello", "--set", 'hello="hi"', "--module", module),
    )
    unknown.error("no checkpoint named 'nope'")
    untyped.error("--module")  # the checkpoint's type is unknown without its module
    mistyped.error("does not fit")
    too_late.error("at or after the replay point")
    assert cli.run_count() == 1  # nothing was created

    done = cli.run("replay", "greet-r", "--set", 'hello="hi there"', "--module", module).ok()
    new_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", new_id), done.stdout
    from_start = cli.run("replay", "gre", "--from", "0", "--json").json()
    assert from_start["replay_of"] == "greet-r"

    worker = Worker(cli, module, cwd=tmp_path)
    try:
        assert cli.wait_for(new_id, "completed").output == "hi there!"
        info = cli.wait_for(from_start["id"], "completed")
        assert info.output == "hello world!" and info.replay_of == "greet-r"
        shown = cli.run("show", new_id[:10]).ok().stdout
        assert re.search(r"^replay of\s+greet-r$", shown, re.M)
        _stop(worker)
    finally:
        worker.close()


def test_retry_resumes_a_failed_run_in_a_worker(cli: Cli, tmp_path: Path) -> None:
    async def populate(rt: kitaru.Runtime) -> None:
        await _finished(rt, flaky, "flaky-r")  # fails: no file named "fixed" yet

    cli.call(populate, flows=[flaky])
    assert cli.info("flaky-r").status == "failed"
    not_failed = cli.run("retry", "nobody")
    not_failed.error("no run 'nobody'")
    (tmp_path / "fixed").touch()  # the fix
    assert cli.run("retry", "flaky").ok().stdout == "flaky-r\n"
    assert cli.run("retry", "flaky-r").error("only failed runs can be retried")

    worker = Worker(cli, str(AGENTS), cwd=tmp_path)
    try:
        info = cli.wait_for("flaky-r", "completed")
        assert info.output == len("hello flaky") + 70
        fragile = [c for c in info.checkpoints if c.name == "fragile"]
        assert fragile[-1].errors and "not fixed yet" in fragile[-1].errors[0]  # history kept
        _stop(worker)
    finally:
        worker.close()


def test_cancel(cli: Cli) -> None:
    async def populate(rt: kitaru.Runtime) -> None:
        await rt.start(listener, run_id="to-cancel")
        with anyio.fail_after(10):
            while (await rt.get_run("to-cancel")).status != "waiting":
                await anyio.sleep(0.01)

    cli.call(populate, flows=[listener])
    assert cli.run("cancel", "to-c").ok().stdout == "cancelled run to-cancel\n"
    again, send, as_json = cli.run_many(
        ("cancel", "to-cancel"),
        ("send", "to-cancel", "bob"),
        ("show", "to-cancel", "--json"),
    )
    again.error("is cancelled already")
    send.error("cancelled")
    assert as_json.json()["status"] == "cancelled"
    assert cli.messages("to-cancel") == []
