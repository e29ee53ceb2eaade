"""Run events for live views (the HTTP API's server-sent events): derived from the store.

The store is the truth, so events are *derived* from it rather than pushed by
the code that changes a run: a watcher reads the run row, then its journal,
and compares them with what its client has seen. The result is one event
stream whatever process executes the run, and events that can be replayed
from the store after a reconnect.

What wakes a watcher:

- :class:`EventBus.touch`, a hook the runtime calls after it changed a run
  here (a checkpoint committed, a wait registered or answered, a status
  change). It costs one attribute test while nobody watches.
- The store's :meth:`~kitaru.storage.base.RunStore.change_token`, polled at
  most once per interval for every watcher together, for runs changed by
  other processes (a worker, the ``kitaru`` command).

Event types: ``checkpoint`` (a journal entry finished: checkpoint, llm call,
send, sleep, child flow, failed attempt), ``message`` (a wait consumed its
message), ``wait`` (a new pending wait: question and JSON Schema) and
``status`` (the run's status differs from the one the client saw last;
transient statuses between two looks can be folded into one event).
Checkpoint, message and wait events are never lost.

Event ids are cursors: each one encodes what the client has seen once it
received that event (the last status, the pending wait, the journal
positions), so a client that reconnects with ``Last-Event-ID`` gets exactly
the events it has not seen, from any server sharing the store.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from ._event_bus import EventBus, Subscription
from ._inspect import checkpoint_info
from ._types import WaitInfo
from .storage.base import TERMINAL_STATUSES, JournalEntry, RunRecord
from .storage.serde import loads_plain

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = (
    "Cursor",
    "EventBus",
    "RunEvent",
    "Subscription",
    "derive_events",
    "run_events",
    "run_summary",
    "runs_events",
    "snapshot_events",
)

#: The RETRY mark ``rt.retry`` leaves on failed entries that will run again.
_RETRY = "retry"


# -- event ids -----------------------------------------------------------------------

_STATUS_CODES = {
    "running": "r",
    "waiting": "w",
    "sleeping": "s",
    "completed": "c",
    "failed": "f",
    "cancelled": "x",
}
_CODE_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_VERSION = "k1"
_DIGITS = string.digits + string.ascii_lowercase


def _base36(number: int) -> str:
    if number <= 0:
        return "0"
    out = []
    while number:
        number, rest = divmod(number, 36)
        out.append(_DIGITS[rest])
    return "".join(reversed(out))


def _ranges(below: int, positions: set[int]) -> str:
    """Every position under ``below`` plus ``positions``: ``(3, {5, 6, 9})`` -> ``"0-2,5-6,9"``."""
    parts: list[str] = []
    if below == 1:
        parts.append("0")
    elif below > 1:
        parts.append(f"0-{below - 1}")
    ordered = sorted(positions)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _parse_ranges(text: str) -> tuple[int, set[int]]:
    """Inverse of :func:`_ranges` (ranges in ascending order)."""
    below = 0
    positions: set[int] = set()
    for part in filter(None, text.split(",")):
        low, dash, high = part.partition("-")
        start, end = int(low), int(high) if dash else int(low)
        if start < 0 or end < start:
            raise ValueError(part)
        if start <= below:
            below = max(below, end + 1)
        elif end - start > 100_000:
            raise ValueError(part)
        else:
            positions.update(range(start, end + 1))
    return below, positions


def _generation(journal: Sequence[JournalEntry]) -> str | None:
    """Identifies the journal's lifetime: the start of its first entry.

    ``continue_as_new`` empties the journal; its next first entry starts later,
    so a cursor made before can tell that its positions mean other entries.
    """
    for entry in journal:
        if entry.position == 0:
            return _base36(int(entry.started_at * 1000))
    return None


@dataclass(slots=True)
class Cursor:
    """What a client has seen of one run; its text form is the SSE event id."""

    status: str | None = None
    #: Position of the pending wait last reported.
    wait: int | None = None
    generation: str | None = None
    #: Every journal position below this one had its completed entry reported.
    done_below: int = 0
    #: Further positions (out of order) whose completed entry was reported.
    done: set[int] = field(default_factory=set)
    #: Failed entries reported: position -> attempts.
    failed: dict[int, int] = field(default_factory=dict)

    def is_done(self, position: int) -> bool:
        """Whether the completed entry at ``position`` was reported."""
        return position < self.done_below or position in self.done

    def mark_done(self, position: int) -> None:
        """Record that the completed entry at ``position`` was reported."""
        self.failed.pop(position, None)
        if position != self.done_below:
            self.done.add(position)
            return
        below = position + 1
        while below in self.done:  # an out-of-order gap closed
            self.done.discard(below)
            below += 1
        self.done_below = below

    def reset_journal(self) -> None:
        """Forget the journal positions (the run's journal was started afresh)."""
        self.done_below = 0
        self.done.clear()
        self.failed.clear()
        self.wait = None

    def encode(self) -> str:
        """``k1.<status>.<wait>.<generation>.<done ranges>.<failed pos x attempts>``."""
        failed = ",".join(f"{p}x{a}" for p, a in sorted(self.failed.items()))
        return ".".join(
            (
                _VERSION,
                _STATUS_CODES.get(self.status or "", "_"),
                "_" if self.wait is None else str(self.wait),
                self.generation or "_",
                _ranges(self.done_below, self.done) or "_",
                failed or "_",
            )
        )

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        """The cursor of an event id; ``None`` when ``text`` is empty or not one of ours."""
        if not text:
            return None
        parts = text.strip().split(".")
        if len(parts) != 6 or parts[0] != _VERSION:
            return None
        _, status, wait, generation, done, failed = parts
        try:
            below, positions = (0, set()) if done == "_" else _parse_ranges(done)
            cursor = cls(
                status=None if status == "_" else _CODE_STATUSES[status],
                wait=None if wait == "_" else int(wait),
                generation=None if generation == "_" else generation,
                done_below=below,
                done=positions,
            )
            if failed != "_":
                for item in failed.split(","):
                    position, _, attempts = item.partition("x")
                    cursor.failed[int(position)] = int(attempts)
        except (KeyError, ValueError):
            return None
        return cursor


# -- derivation ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One server-sent event: its ``id`` (a cursor, or ``""``), type and JSON data."""

    id: str
    type: str
    data: dict[str, Any]


def _utc(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _pending_wait(record: RunRecord) -> dict[str, Any] | None:
    from .actors._mailbox import wait_info

    return wait_info(record.wait)


def _entry_event(run_id: str, entry: JournalEntry) -> tuple[str, dict[str, Any]]:
    data = {"run_id": run_id, **checkpoint_info(entry).model_dump(mode="json")}
    if entry.kind == "wait" and entry.status == "completed":
        meta = loads_plain(entry.metadata) or {}
        data["topic"] = entry.name
        data["message_id"] = meta.get("message_id")
        data["sender"] = meta.get("sender")
        data["value"] = None if entry.value is None else json.loads(entry.value)
        return "message", data
    return "checkpoint", data


def run_summary(record: RunRecord) -> dict[str, Any]:
    """The JSON fields of a run that its row alone gives (no journal read)."""
    wait = _pending_wait(record)
    return {
        "id": record.id,
        "flow": record.flow,
        "status": record.status,
        "created_at": _utc(record.created_at),
        "updated_at": _utc(record.updated_at),
        "error": record.error,
        "question": None if wait is None else wait.get("question"),
        "wake_at": _utc(record.wake_at),
        "replay_of": record.replay_of,
        "parent_id": record.parent_id,
        "usage": {
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cost_usd": record.cost_usd,
        },
    }


def derive_events(
    cursor: Cursor,
    record: RunRecord,
    journal: Sequence[JournalEntry],
    output: Any = None,
) -> list[RunEvent]:
    """The events that take a client from ``cursor`` to the stored state; updates ``cursor``.

    ``record`` must be read *before* ``journal``, so a finished run's journal
    is complete. Order: journal entries by position, then a new wait, then the
    status. ``output`` is the completed run's output as JSON data.
    """
    events: list[RunEvent] = []
    run_id = record.id
    generation = _generation(journal)
    if generation is not None and cursor.generation not in (None, generation):
        cursor.reset_journal()  # continue_as_new started the journal afresh
    if generation is not None:
        cursor.generation = generation
    for entry in sorted(journal, key=lambda e: e.position):
        position = entry.position
        if entry.status == "completed":
            if cursor.is_done(position):
                continue
            cursor.mark_done(position)
        elif entry.status == "failed":
            if cursor.failed.get(position) == entry.attempts:
                continue
            cursor.failed[position] = entry.attempts
        else:  # marked to run again by rt.retry: its outcome comes later
            continue
        kind, data = _entry_event(run_id, entry)
        events.append(RunEvent(cursor.encode(), kind, data))
    wait = _pending_wait(record)
    if wait is None:
        cursor.wait = None
    elif cursor.wait != wait.get("position"):
        cursor.wait = wait.get("position")
        info = WaitInfo(
            topic=wait["topic"],
            question=wait.get("question"),
            schema=wait.get("schema") or {},
            deadline=None
            if wait.get("deadline") is None
            else datetime.fromtimestamp(wait["deadline"], UTC),
        )
        data = {
            "run_id": run_id,
            "position": cursor.wait,
            **info.model_dump(mode="json", by_alias=True),
        }
        events.append(RunEvent(cursor.encode(), "wait", data))
    if record.status != cursor.status:
        cursor.status = record.status
        error_info = loads_plain(record.error_info) or {}
        summary = run_summary(record)
        data = {"run_id": summary.pop("id"), **summary, "error_type": error_info.get("type")}
        if record.status == "completed":
            data["output"] = output
        events.append(RunEvent(cursor.encode(), "status", data))
    return events


async def _output(runtime: Runtime, record: RunRecord) -> Any:
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
            from ._errors import RunNotFound

            raise RunNotFound(run_id)
    journal = await store.load_journal(run_id)
    output = await _output(runtime, record) if record.status == "completed" else None
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
                hosted_here = run_id in runtime._directory.live
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
                    yield RunEvent("", "run", run_summary(row))
            if len(seen) > window * 10:
                seen = dict(list(seen.items())[-window:])
            if idle >= keepalive:
                idle = 0.0
                yield None
