"""Records for store tests: a run, a journal entry, a message, each with test defaults.

Every storage and PostgreSQL test builds its records here, so a field added
to a record needs a default in one place only.
"""

from __future__ import annotations

from typing import Any

from kitaru.storage import JournalEntry, Message, RunRecord

#: A fixed "now" (November 2023): tests never depend on the wall clock.
T0 = 1_700_000_000.0


def make_run(run_id: str, **changes: Any) -> RunRecord:
    """A ``running`` run of flow ``"flow"`` created at ``T0``; ``changes`` override fields."""
    fields: dict[str, Any] = {
        "id": run_id,
        "flow": "flow",
        "status": "running",
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(changes)
    return RunRecord(**fields)


def make_entry(run_id: str, position: int, **changes: Any) -> JournalEntry:
    """A completed checkpoint entry at ``position`` whose value is JSON ``null``."""
    fields: dict[str, Any] = {
        "run_id": run_id,
        "position": position,
        "name": "step",
        "kind": "checkpoint",
        "status": "completed",
        "attempts": 1,
        "started_at": T0 + position,
        "duration_s": 0.25,
        "value": b"null",
    }
    fields.update(changes)
    return JournalEntry(**fields)


def make_message(run_id: str = "r1", topic: str = "t", **changes: Any) -> Message:
    """An unstored message (id 0) to ``run_id`` on ``topic``."""
    fields: dict[str, Any] = {
        "id": 0,
        "run_id": run_id,
        "topic": topic,
        "payload": b'"hi"',
        "created_at": T0,
    }
    fields.update(changes)
    return Message(**fields)
