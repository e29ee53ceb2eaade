"""``kitaru serve`` as a real process: binding rules, the token, a clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

FLOWS = Path(__file__).with_name("api_flows.py")
REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(tmp_path: Path, *args: str, **env: str) -> Iterator[str]:
    """``python -m kitaru serve ARGS`` on a free loopback port; yields its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kitaru", "serve", *args, "--port", str(port)],
        cwd=tmp_path,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/static/app.css", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _, err = process.communicate(timeout=5)
                    raise AssertionError(f"kitaru serve did not start: {err}") from None
                time.sleep(0.1)
        yield url
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert process.wait(timeout=20) == 0, process.stderr.read() if process.stderr else ""
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_serve_refuses_an_open_address_without_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kitaru", "serve", str(FLOWS), "--host", "0.0.0.0"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("kitaru: error: refusing to serve on 0.0.0.0 without a token")
    assert not (tmp_path / ".kitaru").exists()


def test_serve_hosts_flows_and_stops_cleanly_with_streams_open(tmp_path: Path) -> None:
    with ExitStack() as left_open, serving(tmp_path, str(FLOWS)) as url:
        client = left_open.enter_context(httpx.Client(base_url=url, timeout=10))
        names = [f["name"] for f in client.get("/api/flows").json()]
        assert "approval" in names
        run = client.post("/api/flows/approval/runs", json={"input": {"topic": "x"}}).json()
        assert client.get("/").status_code == 200
        rebound = client.get("/api/runs", headers={"Host": "attacker.example"})
        assert rebound.status_code == 403
        # Streams that clients leave open do not hold up Ctrl-C (checked on exit).
        left_open.enter_context(client.stream("GET", "/api/events"))
        left_open.enter_context(client.stream("GET", f"/api/runs/{run['id']}/events"))
    assert (tmp_path / ".kitaru" / "kitaru.db").exists()


def test_serve_with_token_requires_it(tmp_path: Path) -> None:
    token = "serve-test-token-0123456789abcdef"
    with serving(tmp_path, str(FLOWS), KITARU_API_TOKEN=token) as url:
        assert httpx.get(f"{url}/api/runs").status_code == 401
        wrong = httpx.get(f"{url}/api/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        ok = httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # With a token, any Host is answered (the token is the protection).
        other = httpx.get(
            f"{url}/api/runs",
            headers={"Authorization": f"Bearer {token}", "Host": "kitaru.internal"},
        )
        assert other.status_code == 200
