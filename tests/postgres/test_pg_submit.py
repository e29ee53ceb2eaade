"""Runs left for workers on PostgreSQL: a NOTIFY makes another process's workers take them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import kitaru
from kitaru import flow
from kitaru._runtime import _services as _timers
from kitaru.storage.postgres import PostgresStore
from tests._sweeps import counting_sweeps, held_first_sweep
from tests.runtime.test_submit import doubler, executing_owner

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

#: Far above every wait below, as the sweep interval, the lease (a third of
#: which also bounds the sweep interval) and the poll interval: a worker that
#: takes a run in time was woken by a NOTIFY.
NO_POLLING = 60.0
QUIET: dict[str, Any] = {"poll_interval": NO_POLLING, "lease_seconds": 10 * NO_POLLING}
#: How long a woken worker may take to finish a run (milliseconds in practice).
PROMPT = 5.0


def pg_store(rt: kitaru.Runtime) -> PostgresStore:
    store = rt.store
    assert isinstance(store, PostgresStore)
    return store


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.005)


@pytest.fixture(autouse=True)
def _no_timed_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runtimes opened by these tests sweep for runnable runs only when kicked."""
    monkeypatch.setattr(_timers, "_SWEEP", NO_POLLING)


@asynccontextmanager
async def worker(
    url: str, artifacts: Path, flows: Sequence[kitaru.Flow[Any, Any]]
) -> AsyncIterator[kitaru.Runtime]:
    """An open runtime hosting ``flows`` whose lease service is idle, waiting for kicks.

    Its listener's first connection counts as a notification and kicks one
    sweep; the tests submit once that sweep is over, so every pickup they see
    comes from their own notification.
    """
    rt = kitaru.runtime(store=url, artifacts=str(artifacts), flows=flows, **QUIET)
    with counting_sweeps(rt) as sweeps:
        async with rt:
            # One sweep when it opened, one for the listener's first connection.
            await until(
                lambda: (
                    pg_store(rt).listener_pid is not None
                    and sweeps.count >= 2
                    and not rt.placement.sweep_kick.is_set()
                )
            )
            yield rt


def client(url: str, artifacts: Path) -> kitaru.Runtime:
    """A runtime hosting no flow (enter it with ``async with``)."""
    return kitaru.runtime(store=url, artifacts=str(artifacts), **QUIET)


async def listening(rt: kitaru.Runtime) -> PostgresStore:
    store = pg_store(rt)
    await until(lambda: store.listener_pid is not None)
    return store


async def test_a_worker_in_another_process_takes_submitted_runs_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    ran: list[str] = []
    double = doubler(ran)
    async with (
        worker(postgres_url, tmp_path / "w", [double]) as host,
        client(postgres_url, tmp_path / "c") as submitter,
    ):
        host_store, own_store = pg_store(host), await listening(submitter)
        seen, own = host_store.runnable_token(), own_store.runnable_token()
        for i in range(5):
            handle = await submitter.submit(double, i)
            with anyio.fail_after(PROMPT):
                assert await handle.result() == 2 * i
            info = await submitter.get_run(handle.id)
            assert (info.status, info.output) == ("completed", 2 * i)
        # One NOTIFY per submitted run; a store ignores its own.
        assert host_store.runnable_token() == seen + 5
        assert own_store.runnable_token() == own
        assert "double" not in submitter.flow_names
        assert submitter.live_runs == 0
    assert ran == [host.owner] * 5


async def test_retry_and_replay_from_a_runtime_without_the_flow_reach_the_worker_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    ran: list[str] = []
    broken = [True]

    @flow
    async def fragile(x: int) -> int:
        ran.append(executing_owner())
        if broken[0]:
            raise RuntimeError("not yet")
        return x + 1

    async with (
        worker(postgres_url, tmp_path / "w", [fragile]) as host,
        client(postgres_url, tmp_path / "c") as submitter,
    ):
        seen = pg_store(host).runnable_token()
        handle = await submitter.submit(fragile, 7)
        with anyio.fail_after(PROMPT), pytest.raises(kitaru.FlowFailed, match="not yet"):
            await handle.result()
        broken[0] = False
        retried = await submitter.retry(handle.id)
        assert retried.id == handle.id
        with anyio.fail_after(PROMPT):
            assert await retried.result() == 8
        replayed = await submitter.replay(handle.id)
        with anyio.fail_after(PROMPT):
            assert await replayed.result() == 8
        assert (await submitter.get_run(replayed.id)).replay_of == handle.id
        assert pg_store(host).runnable_token() == seen + 3
    assert ran == [host.owner] * 3


async def test_the_http_api_submits_flows_it_exposes_but_does_not_host(
    postgres_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi", reason="the HTTP API needs the fastapi extra")
    from fastapi import FastAPI

    from kitaru.integrations.fastapi import lifespan, router

    ran: list[str] = []
    double = doubler(ran)
    app = FastAPI(lifespan=lifespan(store=postgres_url, artifacts=str(tmp_path / "api"), **QUIET))
    app.include_router(router(flows=[double]))

    async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
        with anyio.fail_after(PROMPT):
            while True:
                info: dict[str, Any] = (await http.get(f"/runs/{run_id}")).json()
                if info["status"] == "completed":
                    return info
                await anyio.sleep(0.01)

    async with (
        worker(postgres_url, tmp_path / "w", [double]) as host,
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http,
    ):
        api_rt: kitaru.Runtime = app.state.kitaru_runtime
        assert [f["name"] for f in (await http.get("/flows")).json()] == ["double"]

        created = await http.post("/flows/double/runs", json={"input": {"x": 21}})
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        assert created.headers["Location"].endswith(f"/runs/{run_id}")
        assert (await finished(http, run_id))["output"] == 42

        again = await http.post("/flows/double/runs", json={"input": {"x": 1}, "run_id": "o-1"})
        assert again.status_code == 201, again.text
        assert (await finished(http, "o-1"))["output"] == 2
        same = await http.post("/flows/double/runs", json={"input": {"x": 1}, "run_id": "o-1"})
        assert (same.status_code, same.json()["id"]) == (200, "o-1")

        refused = await http.post("/flows/double/runs", json={"input": {"x": "many"}})
        assert refused.status_code == 422
        assert len((await http.get("/runs")).json()["runs"]) == 2

        # The API's runtime only submitted: it hosts no flow and executed nothing.
        assert api_rt.flow_names == []
        assert api_rt.live_runs == 0
    assert ran == [host.owner] * 2


async def test_a_run_announced_while_the_worker_sweeps_is_taken_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    ran: list[str] = []
    double = doubler(ran)
    async with (
        worker(postgres_url, tmp_path / "w", [double]) as host,
        client(postgres_url, tmp_path / "c") as submitter,
        held_first_sweep(host) as (sweeping, go_on),
    ):
        host_store = pg_store(host)
        first = await submitter.submit(double, 1)
        with anyio.fail_after(PROMPT):
            await sweeping.wait()
        seen = host_store.runnable_token()
        second = await submitter.submit(double, 2)
        # The NOTIFY reached the worker, and its wake service kicked the lease
        # service, while that sweep (which looked for runs before) was held.
        await until(lambda: host_store.runnable_token() > seen)
        await anyio.wait_all_tasks_blocked()
        go_on.set()
        with anyio.fail_after(PROMPT):
            assert await first.result() == 2
        with anyio.fail_after(3.0):
            assert await second.result() == 4
    assert ran == [host.owner] * 2
