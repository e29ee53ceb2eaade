"""Run events: derivation from the store, cursors as event ids, and SSE over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import kitaru
from kitaru.integrations.fastapi import create_app
from kitaru.integrations.fastapi.events import Cursor, derive_events
from kitaru.storage import JournalEntry, RunRecord
from tests.api.api_flows import FLOWS, approval
from tests.api.conftest import live_server, read_events, until, wait_status

pytestmark = pytest.mark.anyio


# -- derivation (no I/O) ---------------------------------------------------------------


def entry(position: int, status: str = "completed", attempts: int = 1, **kw: Any) -> JournalEntry:
    return JournalEntry(
        run_id="r",
        position=position,
        name=kw.pop("name", f"step{position}"),
        kind=kw.pop("kind", "checkpoint"),
        status=status,
        attempts=attempts,
        started_at=kw.pop("started_at", 1000.0 + position),
        duration_s=0.5,
        **kw,
    )


def record(status: str, wait: bytes | None = None, **kw: Any) -> RunRecord:
    return RunRecord(
        id="r", flow="f", status=status, created_at=1000.0, updated_at=1001.0, wait=wait, **kw
    )


WAIT = (
    b'[{"kind": "wait", "position": 2, "topic": "input", "question": "ok?",'
    b' "schema": {"type": "boolean"}, "deadline": null}]'
)


def test_cursor_round_trips() -> None:
    cursor = Cursor("waiting", 7, "abc")
    for position in (5, 0, 1, 10, 9, 2):
        cursor.mark_done(position)
    cursor.failed[3] = 2
    assert (cursor.done_below, cursor.done) == (3, {5, 9, 10})
    text = cursor.encode()
    assert text == "k1.w.7.abc.0-2,5,9-10.3x2"
    assert Cursor.parse(text) == cursor
    cursor.mark_done(3)
    cursor.mark_done(4)  # the gap closes: 0-5 in one range
    assert (cursor.done_below, cursor.done, cursor.failed) == (6, {9, 10}, {})
    assert Cursor.parse(Cursor().encode()) == Cursor()
    assert Cursor.parse("k1.c._._.0-99999999._") == Cursor("completed", done_below=100_000_000)
    junk = ("", "nonsense", "k1.q._._._._", "k1.r._._.5-1._", "k2.r._._._._", "k1.r.x._._._")
    for text in (*junk, "k1.r._._.5-99999999._", "k1.r._._.-3._"):
        assert Cursor.parse(text) is None, text


def test_long_journals_stay_cheap() -> None:
    journal = [entry(i) for i in range(10_000)]
    cursor = Cursor()
    events = derive_events(cursor, record("completed"), journal)
    assert len(events) == 10_001
    assert events[-1].id == "k1.c._.lfls.0-9999._"
    assert max(len(e.id) for e in events) < 40


def test_events_in_order_with_resumable_ids() -> None:
    journal = [entry(0), entry(1)]
    cursor = Cursor()
    events = derive_events(cursor, record("waiting", WAIT), journal)
    assert [e.type for e in events] == ["checkpoint", "checkpoint", "wait", "status"]
    assert events[2].data["question"] == "ok?"
    assert events[2].data["schema"] == {"type": "boolean"}
    assert events[3].data["status"] == "waiting"
    # Nothing new: nothing sent.
    assert derive_events(cursor, record("waiting", WAIT), journal) == []
    # The message arrives, the run finishes.
    journal += [
        entry(2, kind="wait", name="input", value=b"true", metadata=b'{"message_id": 4}'),
        entry(3),
    ]
    later = derive_events(cursor, record("completed", output=b'"done"'), journal, "done")
    assert [e.type for e in later] == ["message", "checkpoint", "status"]
    assert later[0].data["value"] is True
    assert later[0].data["message_id"] == 4
    assert later[-1].data["output"] == "done"
    # Resuming from any event's id gives the journal events after it, none twice,
    # then the current status (a wait that was answered meanwhile is not pending).
    everything = events + later
    final = (record("completed", output=b'"done"'), journal)
    for i, event in enumerate(everything):
        resumed = derive_events(Cursor.parse(event.id) or Cursor(), *final, "done")
        assert steps(resumed) == steps(everything[i + 1 :])
        if event is not everything[-1]:
            assert resumed[-1].type == "status"
            assert resumed[-1].data["status"] == "completed"
        else:
            assert resumed == []


def steps(events: list[Any]) -> list[tuple[str, int]]:
    """The journal events (checkpoints and messages) among ``events``."""
    return [(e.type, e.data["position"]) for e in events if e.type in ("checkpoint", "message")]


def test_failed_attempts_then_retry() -> None:
    cursor = Cursor()
    failed = derive_events(cursor, record("failed"), [entry(0, "failed", attempts=3)])
    assert [(e.type, e.data["status"]) for e in failed] == [
        ("checkpoint", "failed"),
        ("status", "failed"),
    ]
    # rt.retry marks the entry; nothing to report until it has run again.
    marked = derive_events(cursor, record("running"), [entry(0, "retry", attempts=3)])
    assert [e.type for e in marked] == ["status"]
    done = derive_events(cursor, record("completed"), [entry(0, attempts=4)])
    assert [(e.type, e.data.get("attempts")) for e in done] == [
        ("checkpoint", 4),
        ("status", None),
    ]


def test_journal_started_afresh_is_reported_again() -> None:
    cursor = Cursor()
    derive_events(cursor, record("running"), [entry(0), entry(1)])
    # continue_as_new: a new journal whose first entry started later.
    fresh = derive_events(cursor, record("running"), [entry(0, started_at=5000.0)])
    assert [(e.type, e.data["position"]) for e in fresh] == [("checkpoint", 0)]


async def test_bus_touch_is_free_without_listeners_and_wakes_subscribers(tmp_path: Path) -> None:
    async with kitaru.runtime(store="memory://event-bus", artifacts=str(tmp_path)) as rt:
        await _touch_and_wake(rt.events)


async def _touch_and_wake(bus: Any) -> None:
    bus.touch("a")  # nobody listens: nothing happens
    assert not bus.listening
    with bus.subscribe("a") as sub, bus.subscribe() as every:
        assert bus.listening
        bus.touch("b")
        assert not await sub.wait(0.01)
        assert await every.wait(0.01)
        bus.touch("a")
        assert await sub.wait(1)
        assert every.take() == {"a", "b"}
    assert not bus.listening


# -- over real HTTP --------------------------------------------------------------------


async def collect(
    client: httpx.AsyncClient,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    on_event: Any = None,
) -> list[dict[str, Any]]:
    """Read an event stream to its end; ``on_event`` is awaited for each event."""
    events: list[dict[str, Any]] = []
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                for event in read_events(block + "\n\n"):
                    events.append(event)
                    if on_event is not None:
                        await on_event(event)
    return events


@pytest.mark.slow
async def test_sse_streams_a_run_to_completion_and_resumes(store_url: str, tmp_path: Path) -> None:
    app = create_app(FLOWS, store=store_url, artifacts=str(tmp_path / "art"))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        run = (await client.post("/api/flows/approval/runs", json={"input": {"topic": "q"}})).json()
        path = f"/api/runs/{run['id']}/events"

        async def answer(event: dict[str, Any]) -> None:
            if event["event"] == "wait":
                sent = await client.post(f"/api/runs/{run['id']}/messages", json={"payload": True})
                assert sent.status_code == 202

        with anyio.fail_after(20):
            events = await collect(client, path, on_event=answer)
        kinds = [e["event"] for e in events]
        assert [k for k in kinds if k != "status"] == [
            "checkpoint",
            "wait",
            "message",
            "checkpoint",
        ]
        assert kinds[-1] == "status"
        assert events[-1]["data"]["status"] == "completed"
        assert events[-1]["data"]["output"] == "published: draft about q"
        message = next(e for e in events if e["event"] == "message")
        assert message["data"]["value"] is True
        positions = [e["data"]["position"] for e in events if e["event"] == "checkpoint"]
        assert positions == [0, 2]
        # Reconnecting after the end: nothing new, and the run is finished.
        last = events[-1]["id"]
        assert (await client.get(path, headers={"Last-Event-ID": last})).status_code == 204
        # Reconnecting from the middle: exactly the rest, with the same ids.
        wait_index = kinds.index("wait")
        rest = await collect(client, path, headers={"Last-Event-ID": events[wait_index]["id"]})
        assert journal_events(rest) == journal_events(events[wait_index + 1 :])
        assert rest[-1]["data"]["status"] == "completed"
        # The query parameter does the same (for clients that cannot set headers).
        same = await collect(client, f"{path}?last_event_id={events[wait_index]['id']}")
        assert [e["id"] for e in same] == [e["id"] for e in rest]
        assert (await client.get("/api/runs/nope/events")).status_code == 404


@pytest.mark.slow
async def test_sse_sees_runs_executed_by_another_process(tmp_path: Path) -> None:
    """The server hosts no flow; a separate runtime (a worker) on the same store runs it."""
    store = f"sqlite:///{tmp_path / 'kitaru.db'}"
    artifacts = str(tmp_path / "art")
    app = create_app([], store=store, artifacts=artifacts)
    async with (
        kitaru.runtime(store=store, artifacts=artifacts, flows=[approval]) as worker,
        live_server(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        handle = await worker.start(approval, "remote")
        await until(lambda: _status(worker, handle.id, "waiting"))
        seen: list[str] = []
        listing: list[dict[str, Any]] = []

        async def answer(event: dict[str, Any]) -> None:
            seen.append(event["event"])
            if event["event"] == "wait":
                # The webhook goes to the server, which stores it; the worker consumes it.
                sent = await client.post(f"/api/runs/{handle.id}/messages", json={"payload": True})
                assert sent.status_code == 202

        async def watch_all() -> None:
            async with client.stream("GET", "/api/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        listing.append(httpx.Response(200, content=line[6:]).json())

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_all)
            with anyio.fail_after(20):
                events = await collect(client, f"/api/runs/{handle.id}/events", on_event=answer)
                await until(lambda: _listed(listing, handle.id, "completed"))
            tg.cancel_scope.cancel()
        assert events[-1]["data"]["status"] == "completed"
        assert "message" in seen
        assert await handle.result() == "published: draft about remote"


def journal_events(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (e["event"], e["data"]["position"])
        for e in events
        if e["event"] in ("checkpoint", "message")
    ]


async def _status(rt: kitaru.Runtime, run_id: str, status: str) -> bool:
    return (await rt.get_run(run_id)).status == status


async def _listed(listing: list[dict[str, Any]], run_id: str, status: str) -> bool:
    return any(r["id"] == run_id and r["status"] == status for r in listing)


@pytest.mark.slow
async def test_many_streams_and_keepalive(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'kitaru.db'}"
    app = create_app(FLOWS, store=store, artifacts=str(tmp_path / "art"))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        ids = [
            (
                await client.post("/api/flows/approval/runs", json={"input": {"topic": f"t{i}"}})
            ).json()["id"]
            for i in range(20)
        ]
        for run_id in ids:
            await wait_status(client, run_id, "waiting")
        results: dict[str, list[dict[str, Any]]] = {}

        async def follow(run_id: str) -> None:
            results[run_id] = await collect(client, f"/api/runs/{run_id}/events")

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for run_id in ids:
                    tg.start_soon(follow, run_id)
                await anyio.sleep(0.2)
                for run_id in ids:
                    await client.post(f"/api/runs/{run_id}/messages", json={"payload": False})
        for run_id in ids:
            assert results[run_id][-1]["data"]["output"] == "rejected"


@pytest.mark.slow
async def test_sse_of_a_busy_run_loses_no_checkpoint(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'kitaru.db'}"
    app = create_app(FLOWS, store=store, artifacts=str(tmp_path / "art"))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        run = (await client.post("/api/flows/counter/runs", json={"input": {"steps": 400}})).json()
        with anyio.fail_after(30):
            events = await collect(client, f"/api/runs/{run['id']}/events")
        positions = [e["data"]["position"] for e in events if e["event"] == "checkpoint"]
        assert positions == list(range(400))
        assert events[-1]["data"]["output"] == sum(2 * i for i in range(400))
