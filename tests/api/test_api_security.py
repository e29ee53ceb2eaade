"""Security: bearer token (401/403), body limits (413), malformed and non-JSON bodies,
cross-site requests, the Host guard, and ``kitaru serve`` refusing an open address."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import kitaru
from kitaru.integrations.fastapi import create_app
from kitaru.integrations.fastapi._security import is_loopback, loopback_hosts
from kitaru.integrations.fastapi._serve import check_bind
from tests.api.api_flows import FLOWS
from tests.api.conftest import asgi_client

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-with-enough-entropy"


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    return {"store": f"sqlite:///{tmp_path / 'kitaru.db'}", "artifacts": str(tmp_path / "art")}


@pytest.fixture
async def locked(settings: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that requires TOKEN; it sends no token by itself."""
    app = create_app(FLOWS, token=TOKEN, max_body=2048, **settings)
    async with asgi_client(app) as client:
        yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/runs"),
        ("GET", "/api/flows"),
        ("GET", "/api/runs/x"),
        ("GET", "/api/runs/x/events"),
        ("GET", "/api/events"),
        ("GET", "/api/openapi.json"),
        ("POST", "/api/flows/approval/runs"),
        ("POST", "/api/runs/x/messages"),
        ("POST", "/api/runs/x/cancel"),
        ("POST", "/api/runs/x/retry"),
        ("POST", "/api/runs/x/replay"),
    ],
)
async def test_every_api_route_needs_the_token(
    locked: httpx.AsyncClient, method: str, path: str
) -> None:
    missing = await locked.request(method, path, json={})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    basic = await locked.request(method, path, json={}, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    wrong = await locked.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert "not the one" in wrong.json()["detail"]


async def test_right_token_is_accepted(locked: httpx.AsyncClient) -> None:
    assert (await locked.get("/api/runs", headers=AUTH)).status_code == 200
    started = await locked.post(
        "/api/flows/counter/runs", json={"input": {"steps": 1}}, headers=AUTH
    )
    assert started.status_code == 201
    doc = (await locked.get("/api/openapi.json", headers=AUTH)).json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_token_is_checked_before_the_body_is_read(locked: httpx.AsyncClient) -> None:
    big = await locked.post("/api/flows/counter/runs", content=b"x" * 10_000)
    assert big.status_code == 401


async def test_dashboard_shell_needs_no_token_but_holds_no_data(
    locked: httpx.AsyncClient,
) -> None:
    page = await locked.get("/")
    assert page.status_code == 200
    assert '<meta name="kitaru-api" content="/api">' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    script = await locked.get("/static/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await locked.get("/static/../_security.py")).status_code == 404
    assert (await locked.get("/static/nope.js")).status_code == 404


async def test_oversized_body_is_413(locked: httpx.AsyncClient) -> None:
    payload = {"payload": "x" * 5000}
    declared = await locked.post("/api/runs/x/messages", json=payload, headers=AUTH)
    assert declared.status_code == 413
    assert "limit is 2048 bytes" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for _ in range(10):
            yield b'{"payload": "' + b"y" * 300

    streamed = await locked.post(
        "/api/runs/x/messages",
        content=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    lying = await locked.post(
        "/api/runs/x/messages",
        content=b"{}",
        headers={**AUTH, "Content-Type": "application/json", "Content-Length": "nan"},
    )
    assert lying.status_code in (400, 413)


async def test_malformed_and_non_json_bodies(locked: httpx.AsyncClient) -> None:
    json_headers = {**AUTH, "Content-Type": "application/json"}
    broken = await locked.post(
        "/api/flows/counter/runs", content=b'{"input": {"steps": 1', headers=json_headers
    )
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"
    wrong_shape = await locked.post(
        "/api/flows/counter/runs", content=b"[1, 2]", headers=json_headers
    )
    assert wrong_shape.status_code == 422
    form = await locked.post(
        "/api/flows/counter/runs",
        content=b"input=1",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    text = await locked.post(
        "/api/runs/x/cancel", content=b"hi", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    unknown_field = await locked.post(
        "/api/runs/x/messages", json={"payload": 1, "topik": "input"}, headers=AUTH
    )
    assert unknown_field.status_code == 422
    no_payload = await locked.post("/api/runs/x/messages", json={}, headers=AUTH)
    assert no_payload.status_code == 422


async def test_cross_site_post_is_refused(settings: dict[str, Any]) -> None:
    app = create_app(FLOWS, **settings)
    async with asgi_client(app) as client:
        evil = await client.post(
            "/api/flows/counter/runs",
            json={"input": {"steps": 1}},
            headers={"Origin": "https://evil.example"},
        )
        assert evil.status_code == 403
        assert "cross-site" in evil.json()["detail"]
        null = await client.post("/api/runs/x/cancel", headers={"Origin": "null"})
        assert null.status_code == 403
        same = await client.post(
            "/api/flows/counter/runs",
            json={"input": {"steps": 1}},
            headers={"Origin": "http://127.0.0.1"},
        )
        assert same.status_code == 201
        # Reading is not a cross-site risk the API has to stop (no CORS headers are sent).
        assert (await client.get("/api/runs", headers={"Origin": "https://x.example"})).is_success


async def test_host_guard_blocks_rebound_names(settings: dict[str, Any]) -> None:
    app = create_app(FLOWS, allowed_hosts=loopback_hosts("127.0.0.1"), **settings)
    async with asgi_client(app) as client:
        assert (await client.get("/api/runs")).status_code == 200
        ok = await client.get("/api/runs", headers={"Host": "localhost:8000"})
        assert ok.status_code == 200
        v6 = await client.get("/api/runs", headers={"Host": "[::1]:8000"})
        assert v6.status_code == 200
        rebound = await client.get("/api/runs", headers={"Host": "attacker.example:8000"})
        assert rebound.status_code == 403
        assert "loopback" in rebound.json()["detail"]
        page = await client.get("/", headers={"Host": "attacker.example"})
        assert page.status_code == 403


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
        assert not is_loopback(host), host


def test_open_address_needs_a_token() -> None:
    with pytest.raises(kitaru.ConfigurationError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(kitaru.ConfigurationError):
        check_bind("192.168.1.10", "")
    check_bind("0.0.0.0", TOKEN)
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)


@pytest.mark.slow
def test_serve_refuses_open_address_without_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KITARU_API_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "kitaru.integrations.fastapi", "--host", "0.0.0.0", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token" in done.stderr
    assert not (tmp_path / ".kitaru").exists()  # nothing was opened
