"""``kitaru send``: JSON or a bare word, checked against the pending wait before it is stored."""

from __future__ import annotations

import anyio
import pytest

import kitaru
from tests.cli.cli_agents import approval, greet, listener
from tests.cli.support import Cli

pytestmark = pytest.mark.slow

APPROVALS = ("approve-a", "approve-b")
LISTENERS = ("listen-a", "listen-b", "listen-c")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """One store; each test sends to its own waiting runs (nobody hosts them)."""
    store = Cli(tmp_path_factory.mktemp("send"))

    async def populate(rt: kitaru.Runtime) -> None:
        for run_id in APPROVALS:
            await rt.start(approval, "a memo", run_id=run_id)
        for run_id in LISTENERS:
            await rt.start(listener, run_id=run_id)
        await (await rt.start(greet, "done", run_id="finished")).result()
        for run_id in APPROVALS + LISTENERS:
            while (await rt.get_run(run_id)).status != "waiting":
                await anyio.sleep(0.01)

    store.call(populate, flows=[approval, listener, greet])
    return store


def test_json_value_and_bare_word(cli: Cli) -> None:
    as_json, bare, number = cli.run_many(
        ("send", "approve-a", "true"),
        ("send", "listen-a", "alice", "--json"),
        ("send", "listen-b", "42"),
    )
    assert as_json.ok().stdout.startswith("sent message ")
    assert "to run approve-a on topic 'input'" in as_json.stdout
    data = bare.json()
    assert data["run_id"] == "listen-a" and data["topic"] == "input"
    assert isinstance(data["message_id"], int)
    # 42 is JSON (a number), which a wait for str does not take.
    number.error("does not fit", "'string'")
    assert cli.messages("approve-a") == [True]
    assert cli.messages("listen-a") == ["alice"]
    assert cli.messages("listen-b") == []


def test_rejected_values_store_nothing(cli: Cli) -> None:
    broken, wrong_type, quoted = cli.run_many(
        ("send", "approve-b", "{oops"),
        ("send", "approve-b", "maybe"),
        ("send", "approve-b", '"yes"'),
    )
    broken.error("VALUE is not valid JSON")
    wrong_type.error("does not fit its wait on topic 'input'", '{"type": "boolean"}')
    quoted.error("does not fit")
    assert cli.messages("approve-b") == []
    assert cli.info("approve-b").status == "waiting"


def test_unknown_and_finished_runs(cli: Cli) -> None:
    unknown, finished = cli.run_many(("send", "nobody", "true"), ("send", "finished", '"x"'))
    unknown.error("no run 'nobody'")
    finished.error("completed", "accepts no more messages")
    assert cli.messages("finished") == []


def test_key_and_topic(cli: Cli) -> None:
    first = cli.run("send", "listen-c", "carol", "--key", "k1").ok()
    again, other_topic = cli.run_many(
        ("send", "listen-c", "carol", "--key", "k1"),
        # No wait is pending on "notes": the message is kept for a later wait, unchecked.
        ("send", "listen-c", '{"n": 1}', "--topic", "notes"),
    )
    assert again.ok().stdout == first.stdout  # same message: the duplicate was dropped
    assert cli.messages("listen-c") == ["carol"]
    other_topic.ok()
    assert cli.messages("listen-c", topic="notes") == [{"n": 1}]
