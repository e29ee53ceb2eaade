"""The replay oracle: a replayed run is the run that happened.

Every scenario flow below is run once (rehydrated at every suspension, in
always-evict mode), then replayed from **every** position of its journal. Each
replay must return the same output, record the same journal (names, kinds and
values), and run no checkpoint body before its replay point. A new durable
primitive gets this check by adding a scenario that uses it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.testing import always_evict
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

#: Bodies that ran, by checkpoint name (reset per scenario run).
ran: Counter[str] = Counter()


@checkpoint
async def fetch(topic: str) -> list[str]:
    ran["fetch"] += 1
    return [f"{topic}-a", f"{topic}-b"]


@checkpoint
def summarise(facts: list[str]) -> str:
    ran["summarise"] += 1
    return " & ".join(facts)


@checkpoint
async def score(text: str) -> int:
    ran["score"] += 1
    return len(text)


@flow
async def sequential(topic: str) -> dict[str, Any]:
    facts = await fetch(topic)
    text = await summarise(facts)
    points = await score(text)
    verdict = "long" if points > 10 else "short"  # a branch taken from recorded values
    return {"text": text, "points": points, "verdict": verdict}


@flow
async def helper(text: str) -> int:
    return await score(text)


@flow
async def with_child_and_save(topic: str) -> int:
    facts = await fetch(topic)
    await kitaru.save("facts", facts)
    return await helper(" ".join(facts)) + len(facts)


@flow
async def with_a_wait(topic: str) -> str:
    text = await summarise(await fetch(topic))
    ok = await kitaru.wait(bool, question=f"Keep {text}?")
    return text if ok else "dropped"


@dataclass(frozen=True)
class Scenario:
    flow: kitaru.Flow[Any, Any]
    args: tuple[Any, ...]
    #: Answers the run's waits, in order (as rt.send values).
    answers: tuple[Any, ...] = ()


SCENARIOS = {
    "sequential": Scenario(sequential, ("kitaru",)),
    "child-and-save": Scenario(with_child_and_save, ("x",)),
    "wait": Scenario(with_a_wait, ("y",), answers=(True,)),
}


def journal_of(info: kitaru.RunInfo) -> list[tuple[str, str, str]]:
    return [(c.kind, c.name, c.status) for c in info.checkpoints]


async def finish(rt: kitaru.Runtime, run_id: str, answers: tuple[Any, ...]) -> Any:
    """Answer the run's waits as they come, then return its output."""
    pending = list(answers)
    with anyio.fail_after(15):
        while True:
            info = await rt.get_run(run_id)
            if info.status == "completed":
                return await rt.result(run_id)
            if info.status == "failed":
                raise AssertionError(f"run {run_id} failed: {info.error}")
            if info.pending_wait is not None and pending:
                await rt.send(run_id, pending.pop(0))
            await anyio.sleep(0.01)


async def values(rt: kitaru.Runtime, run_id: str) -> list[Any]:
    """The recorded values of a run's journal, decoded as plain JSON."""
    out: list[Any] = []
    for entry in await rt.store.load_journal(run_id):
        data = entry.value
        if data is None and entry.ref is not None:
            data = await rt.artifacts().get(entry.ref)
        out.append(None if data is None else json.loads(data))
    return out


async def check_every_replay(
    rt: kitaru.Runtime, scenario: Scenario, answer: Callable[[str], Awaitable[Any]]
) -> None:
    ran.clear()
    original = await rt.start(scenario.flow, *scenario.args)
    output = await answer(original.id)
    info = await rt.get_run(original.id)
    recorded = journal_of(info)
    recorded_values = await values(rt, original.id)
    for position in range(len(recorded)):
        before = Counter(ran)
        replay = await rt.replay(original.id, from_checkpoint=position)
        assert await answer(replay.id) == output, f"replay from {position}"
        replayed = await rt.get_run(replay.id)
        assert journal_of(replayed) == recorded, f"replay from {position}"
        assert await values(rt, replay.id) == recorded_values, f"replay from {position}"
        # Nothing before the replay point ran again (its child flow's
        # checkpoint is the child's business: a new child run).
        reran = {name for name, count in (ran - before).items() if count} & {
            c.name for c in info.checkpoints[:position] if c.kind == "checkpoint"
        }
        assert not reran, f"replay from {position} ran {reran} again"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_every_replay_of_a_scenario_is_the_run_that_happened(
    make_runtime: RuntimeFactory, name: str
) -> None:
    scenario = SCENARIOS[name]
    flows = [sequential, helper, with_child_and_save, with_a_wait]
    async with make_runtime(flows=flows, **always_evict()) as rt:

        async def answer(run_id: str) -> Any:
            return await finish(rt, run_id, scenario.answers)

        await check_every_replay(rt, scenario, answer)
