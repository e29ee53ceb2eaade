"""The ``kitaru`` command against a PostgreSQL store: the same commands, the same contract."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import kitaru
from tests.cli.cli_agents import approval, boom, greet
from tests.cli.support import Cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class PostgresCli(Cli):
    """A :class:`Cli` whose store is a PostgreSQL schema of its own."""

    def __init__(self, folder: Path, url: str) -> None:
        super().__init__(folder)
        self.url = url


@pytest.fixture
def pg_cli(tmp_path: Path, postgres_url: str) -> PostgresCli:
    return PostgresCli(tmp_path, postgres_url)


def test_inspect_answer_and_steer_runs_on_postgres(pg_cli: PostgresCli) -> None:
    async def populate(rt: kitaru.Runtime) -> None:
        await (await rt.start(greet, "pg", run_id="greet-pg")).result()
        failed = await rt.start(boom, "no luck", run_id="boom-pg")
        with pytest.raises(kitaru.FlowFailed):
            await failed.result()
        await rt.start(approval, "a memo", run_id="approve-pg")
        while (await rt.get_run("approve-pg")).status != "waiting":
            await anyio.sleep(0.01)

    pg_cli.call(populate, flows=[approval, boom, greet])

    runs, show, bad, prefix = pg_cli.run_many(
        ("runs", "--json"),
        ("show", "approve-pg"),
        ("send", "approve-pg", "maybe"),
        ("show", "nope"),
    )
    statuses = {r["id"]: r["status"] for r in runs.json()}
    assert statuses == {"greet-pg": "completed", "boom-pg": "failed", "approve-pg": "waiting"}
    assert "Publish this?" in show.ok().stdout
    bad.error("does not fit")
    prefix.error("nope")
    assert pg_cli.messages("approve-pg") == []

    sent, cancelled, retried = pg_cli.run_many(
        ("send", "approve-p", "true"),
        ("cancel", "greet-pg"),  # already finished: an error, nothing changes
        ("retry", "boom-pg"),
    )
    sent.ok()
    cancelled.error("greet-pg")
    assert retried.ok().stdout.strip() == "boom-pg"

    async def finish(rt: kitaru.Runtime) -> str:
        result: str = await rt.result("approve-pg")
        return result

    assert pg_cli.call(finish, flows=[approval]) == "published: draft about a memo"
    assert pg_cli.info("greet-pg").status == "completed"
    assert pg_cli.info("boom-pg").status == "running"  # left for a worker hosting `boom`
