"""Fixtures of the HTTP API tests: the app on an ASGI transport, and uvicorn on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import kitaru

fastapi = pytest.importorskip("fastapi", reason="the HTTP API needs the fastapi extra")
uvicorn = pytest.importorskip("uvicorn", reason="the HTTP API needs the fastapi extra")

from kitaru.integrations.fastapi import create_app  # noqa: E402
from tests.api.api_flows import FLOWS  # noqa: E402


async def until(predicate: Any, seconds: float = 10.0) -> Any:
    """Poll an async predicate until it returns something truthy."""
    with anyio.fail_after(seconds):
        while True:
            value = await predicate()
            if value:
                return value
            await anyio.sleep(0.01)


@pytest.fixture
def app_settings(store_url: str, tmp_path: Path) -> dict[str, Any]:
    """Runtime settings of the app under test (both store backends)."""
    return {"store": store_url, "artifacts": str(tmp_path / "artifacts")}


@asynccontextmanager
async def asgi_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan around an httpx client on its ASGI interface."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


@pytest.fixture
async def client(app_settings: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the ASGI app of ``kitaru serve`` hosting the test flows."""
    app = create_app(FLOWS, **app_settings)
    async with asgi_client(app) as c:
        yield c


@asynccontextmanager
async def live_server(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields the base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        ws="none",
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.fail_after(10):
            while not server.started:
                if stopped.is_set():
                    raise RuntimeError("uvicorn did not start")
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            # Let uvicorn close its sockets and run the lifespan's shutdown,
            # even when the test body failed.
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                await stopped.wait()


@contextmanager
def server_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread (for sync clients such as a browser driver)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        ws="none",
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def read_events(text: str) -> list[dict[str, Any]]:
    """Parse SSE text into ``{"id", "event", "data"}`` dicts (comments dropped)."""
    import json

    events = []
    for block in text.split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key in ("id", "event"):
                event[key] = value
            elif key == "data":
                event["data"] = json.loads(value)
        if "event" in event:
            events.append(event)
    return events


async def wait_status(client: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    """Poll ``GET /api/runs/{id}`` until the run has ``status``."""

    async def look() -> dict[str, Any] | None:
        info: dict[str, Any] = (await client.get(f"/api/runs/{run_id}")).json()
        return info if info["status"] == status else None

    result: dict[str, Any] = await until(look)
    return result


__all__ = [
    "asgi_client",
    "kitaru",
    "live_server",
    "read_events",
    "server_thread",
    "until",
    "wait_status",
]
