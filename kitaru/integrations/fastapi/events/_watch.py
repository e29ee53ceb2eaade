"""Watching runs: read the store when something may have changed, yield the new events."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .... import RunNotFound
from ....storage.base import TERMINAL_STATUSES, RunRecord
from .._models import RunRow
from ._cursor import Cursor
from ._derive import RunEvent, derive_events, summary_data

if TYPE_CHECKING:
    from .... import Runtime

__all__ = ("run_events", "runs_events", "snapshot_events")


async def _output_json(runtime: Runtime, record: RunRecord) -> Any:
    """A completed run's output as the JSON data it was stored as (not decoded by its flow)."""
    data = record.output
    if data is None and record.output_ref is not None:
        data = await runtime.artifacts().get(record.output_ref)
    return None if data is None else json.loads(data)


def _never() -> bool:
    return False


def _row_key(record: RunRecord) -> tuple[Any, ...]:
    return (record.status, record.updated_at, record.wait)


async def snapshot_events(
    runtime: Runtime, run_id: str, cursor: Cursor, record: RunRecord | None = None
) -> tuple[RunRecord, list[RunEvent]]:
    """Read the run (row first, then journal) and derive its events from ``cursor``.

    Raises:
        kitaru.RunNotFound: no such run.
    """
    store = runtime.store
    if record is None:
        record = await store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
    journal = await store.load_journal(run_id)
    output = await _output_json(runtime, record) if record.status == "completed" else None
    return record, derive_events(cursor, record, journal, output)


async def run_events(
    runtime: Runtime,
    run_id: str,
    cursor: Cursor | None = None,
    *,
    poll_interval: float = 0.25,
    keepalive: float = 15.0,
    stopping: Callable[[], bool] = _never,
) -> AsyncIterator[RunEvent | None]:
    """Events of one run from ``cursor`` on; ``None`` now and then as a keep-alive.

    Ends after the run reaches a finished status (``completed``, ``failed``,
    ``cancelled``) and its events are out; a run retried later produces new
    events for a client that reconnects with the last id. Also ends soon
    after ``stopping()`` turns true (the server shuts down; clients reconnect
    with the last id).

    Raises:
        kitaru.RunNotFound: no such run (checked before the first event).
    """
    store = runtime.store
    bus = runtime.events
    cursor = cursor or Cursor()
    with bus.subscribe(run_id) as sub:
        token = await bus.change_token(store, poll_interval / 2)
        record: RunRecord | None = None
        while True:
            began = time.monotonic()
            record, events = await snapshot_events(runtime, run_id, cursor, record)
            read_end = time.monotonic()
            for event in events:
                yield event
            if record.status in TERMINAL_STATUSES:
                return
            idle = 0.0
            last = _row_key(record)
            while True:
                if await sub.wait(poll_interval):
                    break
                if stopping():
                    return
                idle += poll_interval
                if idle >= keepalive:
                    idle = 0.0
                    yield None
                fresh = await bus.change_token(store, poll_interval / 2)
                if fresh == token:
                    continue
                token = fresh
                row = await store.get_run(run_id)
                if row is None:
                    continue
                hosted_here = runtime.is_live(run_id)
                if _row_key(row) != last or (row.status == "running" and not hosted_here):
                    break
            sub.take()
            record = None  # read the row again: it comes before the journal
            # A busy run with a long journal must not be re-read back to back:
            # after a read that took t, let t pass (changes meanwhile come in
            # the next read), so watching costs the store at most half its time.
            pause = (read_end - began) - (time.monotonic() - read_end)
            if pause > 0.001:
                await anyio.sleep(pause)


async def runs_events(
    runtime: Runtime,
    *,
    poll_interval: float = 0.25,
    keepalive: float = 15.0,
    window: int = 100,
    stopping: Callable[[], bool] = _never,
) -> AsyncIterator[RunEvent | None]:
    """A ``run`` event (the run's summary) whenever a run's row changes; ``None`` as keep-alive.

    Runs changed in this process are always reported; runs changed by other
    processes are noticed among the ``window`` newest runs. Ends soon after
    ``stopping()`` turns true.
    """
    store = runtime.store
    bus = runtime.events
    with bus.subscribe(None) as sub:
        token = await bus.change_token(store, poll_interval / 2)
        seen = {r.id: _row_key(r) for r in await store.list_runs(limit=window)}
        idle = 0.0
        while True:
            rows: list[RunRecord] = []
            if await sub.wait(poll_interval):
                for run_id in sorted(sub.take()):
                    row = await store.get_run(run_id)
                    if row is not None:
                        rows.append(row)
            else:
                if stopping():
                    return
                idle += poll_interval
                fresh = await bus.change_token(store, poll_interval / 2)
                if fresh != token:
                    token = fresh
                    rows = list(reversed(await store.list_runs(limit=window)))
            for row in rows:
                key = _row_key(row)
                if seen.get(row.id) != key:
                    seen[row.id] = key
                    idle = 0.0
                    yield RunEvent("", "run", summary_data(RunRow.of(row)))
            if len(seen) > window * 10:
                seen = dict(list(seen.items())[-window:])
            if idle >= keepalive:
                idle = 0.0
                yield None
