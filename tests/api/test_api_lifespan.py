"""The lifespan: hosts flows for the app's life, composes with the app's own lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import kitaru
from kitaru.integrations.fastapi import RuntimeDep, lifespan, router
from tests.api.api_flows import approval, counter
from tests.api.conftest import asgi_client, live_server, wait_status

pytestmark = pytest.mark.anyio


async def test_lifespan_composes_with_the_apps_own(tmp_path: Path) -> None:
    calls: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        rt = app.state.kitaru_runtime  # already open: the app's startup can use it
        calls.append(f"start {type(rt).__name__}")
        yield {"greeting": "hello"}
        calls.append("stop")

    app = FastAPI(
        lifespan=lifespan(
            flows=[counter],
            app_lifespan=own,
            store=f"sqlite:///{tmp_path / 'k.db'}",
            artifacts=str(tmp_path / "art"),
        )
    )
    app.include_router(router(), prefix="/kitaru")

    @app.post("/orders/{n}")
    async def order(n: int, rt: RuntimeDep) -> dict[str, str]:
        handle = await rt.start(counter, n)
        return {"run": handle.id}

    async with app.router.lifespan_context(app) as state:
        assert state is not None and state["greeting"] == "hello"
        assert isinstance(state["kitaru_runtime"], kitaru.Runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client:
            run = (await client.post("/orders/3")).json()["run"]
            info = (await client.get(f"/kitaru/runs/{run}")).json()
            assert info["flow"] == "counter"
            # The router starts only the flows the runtime was opened with.
            assert (await client.get("/kitaru/flows")).json()[0]["name"] == "counter"
            refused = await client.post("/kitaru/flows/approval/runs", json={"input": {}})
            assert refused.status_code == 404
    assert calls == ["start Runtime", "stop"]
    assert not hasattr(app.state, "kitaru_runtime")


async def test_without_lifespan_routes_say_what_is_missing() -> None:
    app = FastAPI()
    app.include_router(router())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        response = await client.get("/runs")
        assert response.status_code == 503
        assert "lifespan" in response.json()["detail"]


async def test_router_flows_restrict_what_can_start(tmp_path: Path) -> None:
    app = FastAPI(
        lifespan=lifespan(
            flows=[approval, counter],
            store=f"sqlite:///{tmp_path / 'k.db'}",
            artifacts=str(tmp_path / "art"),
        )
    )
    app.include_router(router(flows=[counter]))
    async with asgi_client(app) as client:
        assert [f["name"] for f in (await client.get("/flows")).json()] == ["counter"]
        assert (await client.post("/flows/approval/runs", json={})).status_code == 404
        ok = await client.post("/flows/counter/runs", json={"input": {"steps": 2}})
        assert ok.status_code == 201
        done = await _until_done(client, ok.json()["id"])
        assert done["output"] == 2


async def _until_done(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    import anyio

    with anyio.fail_after(10):
        while True:
            info: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
            if info["status"] == "completed":
                return info
            await anyio.sleep(0.01)


@pytest.mark.slow
async def test_webhook_over_real_http_survives_a_restart(tmp_path: Path) -> None:
    """A run waits; the service restarts; the webhook answers; the new service finishes it."""
    from kitaru.integrations.fastapi import create_app

    settings = {"store": f"sqlite:///{tmp_path / 'k.db'}", "artifacts": str(tmp_path / "art")}
    async with (
        live_server(create_app([approval], **settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        run = (await client.post("/api/flows/approval/runs", json={"input": {"topic": "x"}})).json()
        await wait_status(client, run["id"], "waiting")
    async with (
        live_server(create_app([approval], **settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        sent = await client.post(f"/api/runs/{run['id']}/messages", json={"payload": True})
        assert sent.status_code == 202
        done = await wait_status(client, run["id"], "completed")
        assert done["output"].startswith("published")
