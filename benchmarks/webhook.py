"""Benchmark 13: the webhook round trip over real HTTP on loopback.

A server process (``python -m benchmarks.webhook serve STORE``: the app of
``kitaru serve`` on uvicorn, hosting ``hook``, on a SQLite file) and this
process as the client (httpx), so client and server do not share a CPU's
event loop. ``hook`` waits for an int and returns it.

- **round trip**: one run at a time is started and its event stream opened;
  once the stream says ``wait``, the clock starts, the message is POSTed to
  ``/api/runs/{id}/messages`` and the clock stops when the same stream says
  ``status: completed``. That is: the POST (checked against the wait's schema,
  stored), the wake of the resident run, its completion committed, and the
  event delivered. p50 and p99 of 200 rounds after 20 warm-up ones; the JSON
  has how long the POST itself took to answer 202.
- **throughput**: 100 runs are started and all wait, with 100 event streams
  open on them; then the 100 messages are POSTed at once and the clock stops
  when every stream said ``completed``. Webhooks/s = 100 / that time; the
  median of 5 batches (each with new runs), and the p50/p99 of the per-run
  round trips under that load. Each run has its own small httpx client there:
  one shared pool of hundreds of connections costs httpx more CPU than the
  server spends. Client and server share the machine's CPUs.

Targets (regression guards, not limits): p50 < 15 ms, >= 100 webhooks/s.

Stand-alone: ``python -m benchmarks.webhook``; in the pass:
``python -m benchmarks.run --only webhook``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio

import kitaru

from ._harness import REPO_ROOT, Context, Result, Target, median, scratch_dir, sqlite_url

__all__ = ("bench_webhook", "hook", "main")

MS = 1e3
ROUNDS = 200
WARMUP = 20
CONCURRENT = 100
BATCHES = 5
ROW = "13 webhook (HTTP, SQLite)"


@kitaru.flow
async def hook(n: int) -> int:
    """Wait for one int and return it plus ``n``."""
    value: int = await kitaru.wait(schema=int, question="a number?")
    return value + n


# -- server -----------------------------------------------------------------------------


async def _serve(store: str, artifacts: str) -> None:
    import uvicorn

    from kitaru.integrations.fastapi import create_app

    app = create_app([hook], store=store, artifacts=artifacts, idle_grace=60.0)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        ws="none",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"listening {port}", flush=True)


# -- client -----------------------------------------------------------------------------


async def _events(response: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


async def _start(client: Any, n: int) -> str:
    response = await client.post("/api/flows/hook/runs", json={"input": {"n": n}})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def _one_round(client: Any, n: int) -> tuple[float, float]:
    """(round trip, POST answer time) of one run, in seconds."""
    run_id = await _start(client, n)
    t0 = post_s = 0.0
    async with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
        async for kind, data in _events(stream):
            if kind == "wait":
                t0 = time.perf_counter()
                sent = await client.post(f"/api/runs/{run_id}/messages", json={"payload": 1})
                post_s = time.perf_counter() - t0
                assert sent.status_code == 202, sent.text
            elif kind == "status" and data["status"] == "completed":
                assert data["output"] == n + 1
                return time.perf_counter() - t0, post_s
    raise AssertionError(f"the stream of run {run_id} ended before it completed")


async def _batch(base_url: str, size: int) -> tuple[float, list[float]]:
    """(seconds for all, per-run round trips) of ``size`` webhooks sent at once.

    Each run gets its own small client (its stream and its POST): one shared
    pool of hundreds of connections costs httpx more CPU than the server spends.
    """
    import httpx

    async with AsyncExitStack() as stack:
        clients = [
            # Plain HTTP: verify=False skips loading CA certificates per client.
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=60, verify=False)
            )
            for _ in range(size)
        ]
        ids = [await _start(clients[0], i) for i in range(size)]
        waiting = 0
        all_waiting = anyio.Event()
        go = anyio.Event()
        started = 0.0
        trips: list[float] = []

        async def follow(client: Any, run_id: str) -> None:
            nonlocal waiting
            async with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
                async for kind, data in _events(stream):
                    if kind == "wait":
                        waiting += 1
                        if waiting == size:
                            all_waiting.set()
                    elif kind == "status" and data["status"] == "completed":
                        trips.append(time.perf_counter() - started)
                        return

        async def send(client: Any, run_id: str) -> None:
            await go.wait()
            sent = await client.post(f"/api/runs/{run_id}/messages", json={"payload": 1})
            assert sent.status_code == 202, sent.text

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for client, run_id in zip(clients, ids, strict=True):
                    tg.start_soon(follow, client, run_id)
                    tg.start_soon(send, client, run_id)
                await all_waiting.wait()
                started = time.perf_counter()
                go.set()
        return time.perf_counter() - started, trips


async def _client(port: int) -> dict[str, Any]:
    import httpx

    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        trips: list[float] = []
        posts: list[float] = []
        for i in range(WARMUP + ROUNDS):
            with anyio.fail_after(30):
                trip, post = await _one_round(client, i)
            if i >= WARMUP:
                trips.append(trip)
                posts.append(post)
    await _batch(base_url, 10)  # warm-up of the concurrent path
    batches: list[float] = []
    loaded: list[float] = []
    for _ in range(BATCHES):
        elapsed, per_run = await _batch(base_url, CONCURRENT)
        batches.append(elapsed)
        loaded.extend(per_run)
    return {"trips": trips, "posts": posts, "batches": batches, "loaded": loaded}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure() -> dict[str, Any]:
    """Start the server process, run the client against it, stop the server."""
    with scratch_dir() as folder:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.webhook",
                "serve",
                sqlite_url(folder / "webhook.db"),
                str(folder / "artifacts"),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("KITARU_")},
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("listening "):
                raise RuntimeError(f"the webhook server did not start: {line!r}")
            data: dict[str, Any] = anyio.run(_client, int(line.split()[1]), backend="asyncio")
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return data


def bench_webhook(ctx: Context) -> list[Result]:
    data = measure()
    trips_ms = [s * MS for s in data["trips"]]
    loaded_ms = [s * MS for s in data["loaded"]]
    rates = [CONCURRENT / s for s in data["batches"]]
    details = {
        "rounds": len(trips_ms),
        "post_202_p50_ms": median(data["posts"]) * MS,
        "post_202_p99_ms": _percentile(data["posts"], 0.99) * MS,
        "batch_seconds": data["batches"],
        "under_load_p50_ms": median(loaded_ms),
        "under_load_p99_ms": _percentile(loaded_ms, 0.99),
    }
    figure = "POST message -> SSE says completed"
    return [
        Result(
            ROW,
            f"{figure}, p50",
            median(trips_ms),
            "ms",
            target=Target("<", 15.0),
            samples=trips_ms,
            details=details,
        ),
        Result(ROW, f"{figure}, p99", _percentile(trips_ms, 0.99), "ms"),
        Result(
            ROW,
            f"{CONCURRENT} waiting runs answered at once",
            statistics.median(rates),
            "webhooks/s",
            target=Target(">=", 100.0),
            samples=rates,
        ),
        Result(ROW, "round trip under that load, p50", median(loaded_ms), "ms"),
        Result(ROW, "round trip under that load, p99", _percentile(loaded_ms, 0.99), "ms"),
    ]


def main() -> None:
    from ._harness import Settings, format_table

    results = bench_webhook(Context(Settings.make(quick=False)))
    print(format_table(results))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        anyio.run(_serve, sys.argv[2], sys.argv[3], backend="asyncio")
    else:
        main()
