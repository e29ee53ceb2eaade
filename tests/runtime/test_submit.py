"""rt.submit: a run stored for any runtime hosting its flow, executed here only if hosted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru._runtime import _services as _timers
from kitaru._runtime._placement import Placement
from kitaru.journal._context import current_flow
from kitaru.storage import AnnouncesRunnable
from tests._sweeps import counting_sweeps, held_first_sweep
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

#: Far above every wait below: with it as the sweep interval, only a kick can
#: explain a prompt pickup (``lease_seconds`` is raised so the lease renewal,
#: every ``lease_seconds / 3``, does not shorten the sweep interval).
NO_SWEEP = 60.0
LONG_LEASE = 10 * NO_SWEEP


def executing_owner() -> str:
    """The lease-owner id of the runtime executing the current flow."""
    frame = current_flow()
    assert frame is not None
    host = frame.execution.host
    assert isinstance(host, Placement)  # the runtime's placement hosts its runs
    return host.owner


def doubler(ran: list[str]) -> kitaru.Flow[Any, Any]:
    """A flow that records which runtime executed it in ``ran``."""

    @flow
    async def double(x: int) -> int:
        ran.append(executing_owner())
        return 2 * x

    return double


@flow
async def other(x: int) -> int:
    return x


async def until_status(rt: kitaru.Runtime, run_id: str, status: str, within: float = 5.0) -> None:
    """Poll the store (not ``rt.result``, which claims runs of hosted flows itself)."""
    with anyio.fail_after(within):
        while True:
            record = await rt.store.get_run(run_id)
            if record is not None and record.status == status:
                return
            await anyio.sleep(0.005)


@asynccontextmanager
async def idle_host(make_runtime: RuntimeFactory, **kwargs: Any) -> AsyncIterator[kitaru.Runtime]:
    """An open runtime whose lease service waits for a kick (it is not sweeping)."""
    rt = make_runtime(lease_seconds=LONG_LEASE, **kwargs)
    assert isinstance(rt, kitaru.Runtime)
    with counting_sweeps(rt) as sweeps:
        async with rt:
            # One sweep when it opened; on PostgreSQL one more, kicked when its
            # LISTEN connection first comes up. The test starts once they are
            # over, so every pickup it sees comes from its own kick.
            expected = 2 if isinstance(rt.store, AnnouncesRunnable) else 1
            with anyio.fail_after(5):
                while sweeps.count < expected or rt.placement.sweep_kick.is_set():
                    await anyio.sleep(0.005)
            yield rt


async def test_a_run_submitted_without_a_host_waits_for_a_worker(
    make_runtime: RuntimeFactory,
) -> None:
    ran: list[str] = []
    double = doubler(ran)
    async with make_runtime() as client:  # hosts no flow
        handle = await client.submit(double, 21)
        info = await client.get_run(handle.id)
        assert (info.flow, info.status, info.owner, info.input) == (
            "double",
            "running",
            None,
            {"x": 21},
        )
        # The client cannot run it: not in a sweep, not while waiting for its result.
        assert await client.recover() == 0
        with anyio.move_on_after(0.3) as waited:
            await handle.result()
        assert waited.cancelled_caught
        assert ran == []
        info = await client.get_run(handle.id)
        assert (info.status, info.owner) == ("running", None)
        assert not client.is_live(handle.id)

        async with make_runtime(flows=[double]) as worker:
            with anyio.fail_after(5):
                assert await handle.result() == 42
        assert ran == [worker.owner]
        info = await client.get_run(handle.id)
        assert (info.status, info.output) == ("completed", 42)
    assert "double" not in client.flow_names


async def test_a_worker_already_open_takes_a_submitted_run(make_runtime: RuntimeFactory) -> None:
    ran: list[str] = []
    double = doubler(ran)
    async with make_runtime(flows=[double]) as worker, make_runtime() as client:
        # In its next sweep (every second), or at once on PostgreSQL (a NOTIFY).
        handles = [await client.submit(double, i) for i in range(3)]
        with anyio.fail_after(5):
            assert [await h.result() for h in handles] == [0, 2, 4]
    assert ran == [worker.owner] * 3


async def test_a_runtime_hosting_the_flow_runs_what_it_submits_at_once(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_timers, "_SWEEP", NO_SWEEP)
    ran: list[str] = []
    double = doubler(ran)
    async with idle_host(make_runtime, flows=[double]) as rt:
        handle = await rt.submit(double, 4)
        # Only the submit's own kick can make the lease service sweep this soon.
        await until_status(rt, handle.id, "completed", within=5.0)
        assert ran == [rt.owner]
        assert await handle.result() == 8


async def test_submitting_the_same_run_id_again_changes_nothing(
    make_runtime: RuntimeFactory,
) -> None:
    ran: list[str] = []
    double = doubler(ran)
    async with make_runtime() as client:
        first = await client.submit(double, 1, run_id="job-1")
        before = await client.store.get_run("job-1")
        second = await client.submit(double, 2, run_id="job-1")
        assert first.id == second.id == "job-1"
        assert await client.store.get_run("job-1") == before  # input 1 kept, no owner
        assert [(r.id, r.input) for r in await client.list_runs()] == [("job-1", {"x": 1})]
        with pytest.raises(kitaru.ConfigurationError, match="already belongs to flow 'double'"):
            await client.submit(other, 1, run_id="job-1")
        assert len(await client.list_runs()) == 1
    assert ran == []


async def test_submitting_the_id_of_a_finished_run_executes_nothing_again(
    make_runtime: RuntimeFactory,
) -> None:
    ran: list[str] = []
    double = doubler(ran)
    async with make_runtime(flows=[double]) as rt:
        assert await (await rt.submit(double, 5, run_id="once")).result() == 10
        again = await rt.submit(double, 5, run_id="once")
        assert again.id == "once"
        assert await again.result() == 10
        assert (await rt.get_run("once")).status == "completed"
        with pytest.raises(kitaru.ConfigurationError, match="already belongs to flow 'double'"):
            await rt.submit(other, 5, run_id="once")
    assert ran == [rt.owner]


async def test_a_budget_is_stored_with_the_submitted_run(make_runtime: RuntimeFactory) -> None:
    double = doubler([])
    async with make_runtime() as client:
        budgets: list[kitaru.Budget | dict[str, int]] = [kitaru.Budget(tokens=500), {"tokens": 500}]
        for budget in budgets:
            handle = await client.submit(double, 1, budget=budget)
            record = await client.store.get_run(handle.id)
            assert record is not None and record.budget is not None
            assert kitaru.Budget.model_validate_json(record.budget) == kitaru.Budget(tokens=500)
        with pytest.raises(kitaru.ConfigurationError, match=r"rt\.submit\(budget=\.\.\.\)"):
            await client.submit(double, 1, budget={"tokenz": 5})
        assert len(await client.list_runs()) == 2


async def test_bad_arguments_are_rejected_and_nothing_is_stored(
    make_runtime: RuntimeFactory,
) -> None:
    ran: list[str] = []
    double = doubler(ran)

    class Opaque:
        pass

    @flow
    async def takes(x: object) -> None:
        return None

    for flows in ((), (double,)):  # a client, and a runtime that hosts the flow
        async with make_runtime(flows=list(flows)) as rt:
            with pytest.raises(TypeError, match=r"arguments do not fit flow 'double'\(x: 'int'\)"):
                await rt.submit(double, 1, 2)
            with pytest.raises(TypeError, match="arguments do not fit flow 'double'"):
                await rt.submit(double, y=1)
            with pytest.raises(TypeError, match="arguments do not fit flow 'double'"):
                await rt.submit(double)
            with pytest.raises(kitaru.SerializationError, match="argument 'x' of flow 'double'"):
                await rt.submit(double, "not a number")
            with pytest.raises(kitaru.SerializationError, match="argument 'x'"):
                await rt.submit(takes, Opaque())
            assert await rt.list_runs() == []
    assert ran == []


async def test_submitting_something_else_than_a_flow_is_a_type_error(
    make_runtime: RuntimeFactory,
) -> None:
    @checkpoint
    async def step(x: int) -> int:
        return x

    async def plain(x: int) -> int:
        return x

    async with make_runtime() as rt:
        for thing in (step, plain, "double", None):
            with pytest.raises(TypeError, match="expected a @flow-decorated function"):
                await rt.submit(thing, 1)  # type: ignore[arg-type]
        assert await rt.list_runs() == []
        assert rt.flow_names == []


async def test_submit_needs_an_open_runtime(make_runtime: RuntimeFactory) -> None:
    double = doubler([])
    runtime = make_runtime()
    assert isinstance(runtime, kitaru.Runtime)
    with pytest.raises(kitaru.RuntimeStateError, match="unopened"):
        await runtime.submit(double, 1)
    async with runtime:
        pass
    with pytest.raises(kitaru.RuntimeStateError, match="closed"):
        await runtime.submit(double, 1)


async def test_a_run_submitted_during_a_sweep_is_taken_at_once(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_timers, "_SWEEP", NO_SWEEP)
    ran: list[str] = []
    double = doubler(ran)
    async with (
        idle_host(make_runtime, flows=[double]) as rt,
        held_first_sweep(rt) as (sweeping, go_on),
    ):
        first = await rt.submit(double, 1)
        with anyio.fail_after(5):
            await sweeping.wait()
        # That sweep has looked for runnable runs already: this one was not among them.
        second = await rt.submit(double, 2)
        go_on.set()
        await until_status(rt, first.id, "completed", within=3.0)
        await until_status(rt, second.id, "completed", within=3.0)
        assert ran == [rt.owner] * 2
