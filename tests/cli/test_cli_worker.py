"""``kitaru worker``: finishes runs that a script started and left waiting; stops on signals."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from tests.cli.support import AGENTS, Cli, Worker

pytestmark = pytest.mark.slow


def test_a_run_left_waiting_by_a_script_is_finished_by_a_worker(cli: Cli, tmp_path: Path) -> None:
    # The script starts the run, sees it wait for approval, and exits.
    assert cli.start_script("approval", "memo-1", "the memo") == "waiting"
    assert cli.run("send", "memo-1", "true").ok()
    assert cli.messages("memo-1") == [True]

    worker = Worker(cli, str(AGENTS), cwd=tmp_path)
    try:
        info = cli.wait_for("memo-1", "completed")
        assert info.output == "published: draft about the memo"
        log = worker.wait_started()
        assert "hosting 6 flow(s) approval, boom, flaky, greet, listener, report" in log
        assert f"store {cli.url}" in log
        code, took = worker.stop(signal.SIGTERM)
        assert code == 0, worker.text()
        assert took < 5, took
        assert "SIGTERM received: stopping" in worker.text()
        assert "stopped" in worker.text()
    finally:
        worker.close()


def test_a_worker_started_first_takes_a_message_that_comes_later(cli: Cli, tmp_path: Path) -> None:
    # A dotted module name found in the current folder, with the interpreter
    # not adding that folder to sys.path itself (like the console script).
    shutil.copy(AGENTS, tmp_path / "my_agents.py")
    worker = Worker(cli, "my_agents", cwd=tmp_path, python=["-P"])
    try:
        worker.wait_started()
        assert cli.start_script("listener", "later-1") == "waiting"
        assert cli.info("later-1").status == "waiting"
        cli.run("send", "later-1", "bob").ok()
        assert cli.wait_for("later-1", "completed").output == "hi bob"
        code, took = worker.stop(signal.SIGINT)
        assert code == 0, worker.text()
        assert took < 5, took
    finally:
        worker.close()


def test_bad_modules_are_one_line_errors(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "no_flows.py").write_text("X = 1\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('misconfigured')\n")
    (tmp_path / "syntax.py").write_text("def broken(:\n")
    empty, raising, syntax, missing_file, missing_module = cli.run_many(
        ("worker", str(tmp_path / "no_flows.py")),
        ("worker", str(tmp_path / "raises.py")),
        ("worker", str(tmp_path / "syntax.py")),
        ("worker", str(tmp_path / "nowhere.py")),
        ("worker", "no_such_module_anywhere"),
    )
    empty.error("has no flows", "@kitaru.flow")
    raising.error("cannot import", "RuntimeError: misconfigured")
    syntax.error("cannot import", "SyntaxError")
    missing_file.error("no such file")
    missing_module.error("no module named 'no_such_module_anywhere'")
    assert not (tmp_path / "kitaru.db").exists()  # nothing was opened
