"""Budgets: a call made once the run spent its tokens or dollars raises BudgetExceeded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

import kitaru
from kitaru import Budget, checkpoint, flow
from kitaru.storage._migrations.sqlite import APPLICATION_ID, MIGRATIONS
from kitaru.storage.sqlite import SQLiteStore
from tests.conftest import RuntimeFactory
from tests.llm.conftest import Script

pytestmark = pytest.mark.anyio


@flow
async def three_calls() -> str:
    """Each scripted answer costs 10 tokens (7 in, 3 out)."""
    answers = [await kitaru.llm(f"q{i}", model="scripted/m") for i in range(3)]
    return ",".join(answers)


async def test_a_token_budget_stops_the_run(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("a", "b", "c")
    run = await rt.start(three_calls, budget=Budget(tokens=15))
    with pytest.raises(kitaru.FlowFailed) as caught:
        await run.result()
    assert caught.value.error_type == "kitaru.BudgetExceeded"
    assert "20 tokens of its 15-token budget" in caught.value.error
    assert scripted.count == 2  # the third call was never made
    info = await run.info()
    refused = info.checkpoints[2]
    assert (refused.kind, refused.status, refused.attempts) == ("llm", "failed", 0)
    assert info.usage.input_tokens + info.usage.output_tokens == 20


async def test_the_flow_may_catch_it_and_a_replay_raises_it_again(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("a")

    @flow(budget={"tokens": 1})
    async def f() -> str:
        first = await kitaru.llm("q", model="scripted/m")
        try:
            second = await kitaru.llm("q", model="scripted/m")
        except kitaru.BudgetExceeded as exc:
            second = f"[skipped: {exc}]"
        await kitaru.wait(str)  # evicted here in always-evict mode: the flow replays
        return f"{first} {second}"

    run = await rt.start(f)
    while (await run.info()).status != "waiting":
        await anyio.sleep(0.01)
    await rt.send(run.id, "go")
    result = await run.result()
    assert result.startswith("a [skipped: run ")
    assert "10 tokens of its 1-token budget" in result
    assert scripted.count == 1


async def test_a_cost_budget_counts_known_prices(rt: kitaru.Runtime) -> None:
    @flow
    async def f() -> int:
        calls = 0
        while True:
            try:
                await kitaru.llm("q", model="gpt-4o-mini", mock_response="x")
            except kitaru.BudgetExceeded:
                return calls
            calls += 1

    run = await rt.start(f, budget=Budget(cost_usd=0.00004))
    # gpt-4o-mini's mock answer costs 1.35e-05: three calls reach 4.05e-05.
    assert await run.result() == 3
    info = await run.info()
    assert info.usage.cost_usd is not None and info.usage.cost_usd >= 0.00004


async def test_the_runs_own_budget_wins_and_survives_a_restart(
    make_runtime: RuntimeFactory, scripted: Script
) -> None:
    scripted.add("a", "b")

    @flow(budget={"tokens": 1_000_000})
    async def f() -> str:
        first = await kitaru.llm("q", model="scripted/m")
        await kitaru.wait(str)
        return first + await kitaru.llm("q", model="scripted/m")

    async with make_runtime(flows=[f], budget={"tokens": 1_000_000}) as rt:
        run = await rt.start(f, budget={"tokens": 5})
        while (await run.info()).status != "waiting":
            await anyio.sleep(0.01)
    async with make_runtime(flows=[f]) as rt:
        await rt.send(run.id, "go")
        with pytest.raises(kitaru.FlowFailed, match="5-token budget"):
            await rt.result(run.id)
    assert scripted.count == 1


async def test_the_runtime_default_applies_to_runs_without_one(
    make_runtime: RuntimeFactory, scripted: Script
) -> None:
    scripted.add("a", "b", "c")
    async with make_runtime(budget=Budget(tokens=10)) as rt:
        run = await rt.start(three_calls)
        with pytest.raises(kitaru.FlowFailed, match="10-token budget"):
            await run.result()
    assert scripted.count == 1


async def test_calls_in_a_checkpoint_count_before_it_commits(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("a", "b", "c")

    @checkpoint
    async def many() -> int:
        done = 0
        try:
            for _ in range(3):
                await kitaru.llm("q", model="scripted/m")
                done += 1
        except kitaru.BudgetExceeded:
            pass
        return done

    @flow
    async def f() -> int:
        return await many()

    run = await rt.start(f, budget=Budget(tokens=20))
    assert await run.result() == 2
    assert scripted.count == 2
    assert (await run.info()).usage.input_tokens == 14


async def test_replays_keep_the_originals_budget(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("a", "b")
    run = await rt.start(three_calls, budget={"tokens": 10})
    with pytest.raises(kitaru.FlowFailed):
        await run.result()
    new = await rt.replay(run.id, from_checkpoint=1)
    with pytest.raises(kitaru.FlowFailed, match="10-token budget"):
        await new.result()
    assert scripted.count == 2  # the replay's one live call, then the budget


async def test_a_version_1_database_gains_the_budget_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(
        "INSERT INTO runs (id, flow, status, created_at, updated_at) "
        "VALUES ('old', 'f', 'completed', 0, 0)"
    )
    conn.close()
    async with SQLiteStore(f"sqlite:///{path}") as store:
        record = await store.get_run("old")
    assert record is not None and record.budget is None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 2
    conn.close()
