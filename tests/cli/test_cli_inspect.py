"""``kitaru runs`` and ``kitaru show`` on a real SQLite store; run id prefixes; store errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import kitaru
from tests.cli.cli_agents import approval, boom, greet, report
from tests.cli.support import TIMEOUT, Cli, child_env

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[")


class Fixture:
    """The module's store and the ids of the runs in it, oldest first."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.greet_ids: list[str] = []
        self.failed = ""
        self.waiting = "approval-1"

    async def populate(self, rt: kitaru.Runtime) -> None:
        assert await (await rt.start(report, "tides", run_id="report-1")).result() == 5
        for run_id in ("cafe01-one", "cafe01-two", None):
            handle = await rt.start(greet, "world", run_id=run_id)
            assert await handle.result() == "hello world!"
            self.greet_ids.append(handle.id)
        handle = await rt.start(boom, "why")
        with pytest.raises(kitaru.FlowFailed):
            await handle.result()
        self.failed = handle.id
        await rt.start(approval, "cli", run_id=self.waiting)
        while (await rt.get_run(self.waiting)).status != "waiting":
            await anyio.sleep(0.01)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    fixture = Fixture(Cli(tmp_path_factory.mktemp("inspect")))
    fixture.cli.call(fixture.populate, flows=[report, greet, boom, approval])
    return fixture


def test_runs_prints_a_table_newest_first(store: Fixture) -> None:
    out = store.cli.run("runs").ok().stdout
    assert not ANSI.search(out)
    header, *rows = out.splitlines()
    assert header.split() == [
        "ID",
        "FLOW",
        "STATUS",
        "STARTED",
        "DURATION",
        "CHECKPOINTS",
        "TOKENS",
        "COST",
    ]
    assert [row.split()[:3] for row in rows] == [
        ["approval-1", "approval", "waiting"],
        [store.failed[:12], "boom", "failed"],
        [store.greet_ids[2][:12], "greet", "completed"],
        ["cafe01-two", "greet", "completed"],
        ["cafe01-one", "greet", "completed"],
        ["report-1", "report", "completed"],
    ]
    # Started (local date and time), a humanised duration and the checkpoint count.
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\S+s\s+2$", rows[-1]), rows[-1]


def test_runs_filters_limit_and_json(store: Fixture) -> None:
    failed, greets, limited, after, bad_status, bad_limit = store.cli.run_many(
        ("runs", "--status", "failed"),
        ("runs", "--flow", "greet", "--json"),
        ("--json", "runs", "--limit", "2"),
        ("runs", "--limit", "1", "--json"),
        ("runs", "--status", "finished"),
        ("runs", "--limit", "0"),
    )
    assert [r.split()[0] for r in failed.ok().stdout.splitlines()[1:]] == [store.failed[:12]]
    data = greets.json()
    assert [r["id"] for r in data] == list(reversed(store.greet_ids))  # full ids
    assert len(data[0]["id"]) == 32
    first = data[0]
    assert first["flow"] == "greet" and first["status"] == "completed"
    assert first["checkpoints"] == 1 and first["duration_s"] >= 0
    assert first["created_at"].startswith("20") and "T" in first["created_at"]  # ISO
    assert [r["id"] for r in limited.json()] == ["approval-1", store.failed]
    assert [r["id"] for r in after.json()] == ["approval-1"]
    bad_status.error("invalid choice: 'finished'")
    bad_limit.error("--limit", "at least 1")


def test_show_timelines_of_completed_failed_and_waiting_runs(store: Fixture) -> None:
    completed, failed, waiting, as_json, logged = store.cli.run_many(
        ("show", "cafe01-one"),
        ("show", store.failed[:8]),
        ("show", "approval-1"),
        ("show", "approval-1", "--json"),
        ("show", "report-1"),
    )
    text = completed.ok().stdout
    assert not ANSI.search(text)
    assert re.search(r"^status\s+completed$", text, re.M)
    assert re.search(r"^output\s+\"hello world!\"$", text, re.M)
    assert re.search(r"^\s+0\s+hello\s+checkpoint\s+completed\s+1\s+\S+$", text, re.M), text

    text = failed.ok().stdout
    assert f"run       {store.failed}" in text
    assert "error: ValueError: exploded: why" in text
    assert "Traceback (most recent call last)" in text
    assert 'raise ValueError(f"exploded: {reason}")' in text
    assert "attempt 1 failed: ValueError: exploded: why" in text
    assert f"kitaru retry {store.failed[:12]}" in text

    text = waiting.ok().stdout
    assert re.search(r"^\s+0\s+draft\s+checkpoint\s+completed", text, re.M)
    assert "waiting for a message on topic 'input'" in text
    assert "    Publish this?\n    draft about cli\n" in text
    assert 'expected JSON Schema: {"type": "boolean"}' in text
    assert "kitaru send approval-1 VALUE" in text

    data = as_json.json()
    info = kitaru.RunInfo.model_validate(data)
    assert info.id == "approval-1" and info.status == "waiting"
    assert data["pending_wait"]["schema"] == {"type": "boolean"}
    assert data["pending_wait"]["question"] == "Publish this?\ndraft about cli"
    assert [c["name"] for c in data["checkpoints"]] == ["draft"]

    # Metadata of the run and of its checkpoints, saved artifacts and their refs.
    text = logged.ok().stdout
    assert re.search(r'^metadata\s+\{"requested_by": "cli-test"\}$', text, re.M), text
    assert re.search(
        r"^\s+0\s+measure\s+checkpoint\s+completed\s+1\s+\S+\s+"
        r'\{"source": "web", "chars": 5\}$',
        text,
        re.M,
    ), text
    assert re.search(r"^\s+1\s+summary\s+save\s+completed", text, re.M), text
    ref = re.search(r"^  summary\s+(\S+)$", text, re.M)
    assert ref is not None, text
    assert f"artifact: {ref.group(1)}" in text


def test_run_id_prefixes(store: Fixture) -> None:
    unique, ambiguous, unknown, send_ambiguous = store.cli.run_many(
        ("show", "cafe01-o", "--json"),
        ("show", "cafe01"),
        ("show", "feedbeef"),
        ("send", "cafe01", "true"),
    )
    assert unique.json()["id"] == "cafe01-one"
    ambiguous.error("ambiguous", "cafe01-one", "cafe01-two")
    unknown.error("no run 'feedbeef'", "kitaru runs")
    send_ambiguous.error("ambiguous")


def test_store_errors_are_one_line_and_create_nothing(cli: Cli, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"this is not a database" * 100)
    missing_runs, missing_show, scheme, not_kitaru, bad_url = cli.run_many(
        ("runs",),
        ("show", "abc"),
        ("--store", "nosuch://x", "runs"),
        ("runs", "--store", f"sqlite:///{foreign}"),
        ("--store", "sqlite://host/x.db", "runs"),
    )
    assert missing_runs.ok().stdout == "no runs\n"
    assert "no kitaru store at" in missing_runs.stderr
    missing_show.error("no kitaru store at")
    scheme.error("unknown scheme 'nosuch'")
    not_kitaru.error("not a kitaru SQLite database")
    bad_url.error("names a host")
    assert not (tmp_path / "kitaru.db").exists()
    assert foreign.read_bytes() == b"this is not a database" * 100


def test_usage_errors_are_one_line(cli: Cli) -> None:
    unknown, missing, no_command = cli.run_many(("frobnicate",), ("show",), ())
    unknown.error("invalid choice: 'frobnicate'")
    missing.error("required: RUN", "kitaru show --help")
    assert no_command.ok().stdout.startswith("usage: kitaru")


def test_store_from_environment_and_config_file(store: Fixture, tmp_path: Path) -> None:
    """Without --store, KITARU_STORE wins over kitaru.toml, which wins over ./.kitaru/."""
    (tmp_path / "kitaru.toml").write_text(f'store = "{store.cli.url}"\n')
    command = [sys.executable, "-m", "kitaru", "runs", "--limit", "1", "--json"]
    envs = [child_env(), {**child_env(), "KITARU_STORE": "sqlite:///elsewhere.db"}]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for env in envs
    ]
    outs = []
    for proc in procs:
        with proc:
            outs.append(proc.communicate(timeout=TIMEOUT)[0])
        assert proc.returncode == 0
    assert [r["id"] for r in json.loads(outs[0])] == ["approval-1"]
    assert json.loads(outs[1]) == []  # elsewhere.db does not exist: nothing listed
    assert not (tmp_path / "elsewhere.db").exists()
