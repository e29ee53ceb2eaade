"""Events from the store's state: what takes a client from its cursor to the stored run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...._runtime._inspect import checkpoint_info, pending_wait
from ....storage.base import JournalEntry, RunRecord
from ....storage.serde import loads_plain
from .._models import RunRow
from ._cursor import Cursor, generation

__all__ = ("RunEvent", "derive_events", "summary_data")

#: The RETRY mark ``rt.retry`` leaves on failed entries that will run again.
_RETRY = "retry"


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One server-sent event: its ``id`` (a cursor, or ``""``), type and JSON data."""

    id: str
    type: str
    data: dict[str, Any]


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


def summary_data(row: RunRow) -> dict[str, Any]:
    """A run's summary in events (``run``, ``status``): its row, the wait's question only."""
    data: dict[str, Any] = {}
    for key, value in row.model_dump(mode="json").items():
        if key == "pending_wait":
            key, value = "question", None if value is None else value["question"]
        data[key] = value
    return data


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
    lifetime = generation(journal)
    if lifetime is not None and cursor.generation not in (None, lifetime):
        cursor.reset_journal()  # continue_as_new started the journal afresh
    if lifetime is not None:
        cursor.generation = lifetime
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
    wait = pending_wait(record)
    if wait is None:
        cursor.wait = None
    elif cursor.wait != wait[0]:
        cursor.wait, info = wait
        data = {
            "run_id": run_id,
            "position": cursor.wait,
            **info.model_dump(mode="json", by_alias=True),
        }
        events.append(RunEvent(cursor.encode(), "wait", data))
    if record.status != cursor.status:
        cursor.status = record.status
        error_info = loads_plain(record.error_info) or {}
        summary = summary_data(RunRow.of(record))
        data = {"run_id": summary.pop("id"), **summary, "error_type": error_info.get("type")}
        if record.status == "completed":
            data["output"] = output
        events.append(RunEvent(cursor.encode(), "status", data))
    return events
