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


@flow
async def sub_agent(calls: int) -> int:
    """A child flow with no budget of its own: ``calls`` calls of 10 tokens each."""
    made = 0
    try:
        for i in range(calls):
            await kitaru.llm(f"sub{i}", model="scripted/m")
            made += 1
    except kitaru.BudgetExceeded:
        pass
    return made


@flow
async def delegating(calls: int) -> str:
    """Hands its work to a child flow, then makes one call of its own."""
    made = await sub_agent(calls)
    try:
        await kitaru.llm("own", model="scripted/m")
    except kitaru.BudgetExceeded as exc:
        return f"{made} [{exc}]"
    return f"{made} own"


async def test_a_parents_budget_covers_its_child_flows(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("a", "b", "c", "d")
    run = await rt.start(delegating, 5, budget=Budget(tokens=15))
    result = await run.result()
    # The child made two calls (0 and 10 tokens spent before them), then the
    # tree had spent 20 of 15; the parent's own call is refused as well.
    assert result.startswith("2 [run ")
    assert "has spent 20 tokens of its 15-token budget (child flows included)" in result
    assert scripted.count == 2
    parent, child = await rt.get_run(run.id), await rt.get_run(f"{run.id}.0")
    assert parent.usage.input_tokens + parent.usage.output_tokens == 0  # its own calls
    assert child.usage.input_tokens + child.usage.output_tokens == 20


async def test_a_child_is_refused_by_its_parents_budget_with_a_clear_message(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("a", "b", "c")

    @flow
    async def strict_child() -> str:
        await kitaru.llm("1", model="scripted/m")
        await kitaru.llm("2", model="scripted/m")
        return await kitaru.llm("3", model="scripted/m")

    @flow
    async def parent() -> str:
        return await strict_child()

    run = await rt.start(parent, budget={"tokens": 15})
    with pytest.raises(kitaru.FlowFailed):
        await run.result()
    child = await rt.get_run(f"{run.id}.0")
    assert child.status == "failed" and child.error is not None
    assert f"is a child flow of run {run.id}, which has spent 20 tokens" in child.error
    assert scripted.count == 2


async def test_a_childs_own_budget_still_applies(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("a", "b")

    @flow(budget={"tokens": 5})
    async def frugal() -> int:
        return await sub_agent(3)

    @flow
    async def parent() -> int:
        return await frugal()

    run = await rt.start(parent, budget={"tokens": 1_000})
    assert await run.result() == 1  # sub_agent (budget-less) is bounded by frugal's 5
    assert scripted.count == 1


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
