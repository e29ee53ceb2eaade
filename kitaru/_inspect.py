"""Building the public :class:`kitaru.RunInfo` from store records (read side only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._artifacts import find_artifacts
from ._types import CheckpointInfo, RunInfo, RunStatus, Usage, WaitInfo
from .actors._mailbox import wait_info
from .storage.base import JournalEntry, RunRecord
from .storage.serde import loads_plain

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ("checkpoint_info", "run_info")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def checkpoint_info(entry: JournalEntry) -> CheckpointInfo:
    """The public record of one journal entry (failed attempts moved to ``errors``)."""
    meta = loads_plain(entry.metadata) or {}
    errors = meta.pop("errors", [])
    return CheckpointInfo(
        position=entry.position,
        name=entry.name,
        kind=entry.kind,
        status=entry.status,
        attempts=entry.attempts,
        started_at=_utc(entry.started_at),
        duration_s=entry.duration_s,
        metadata=meta,
        errors=errors,
        artifact=entry.ref,
    )


async def run_info(runtime: Runtime, record: RunRecord, count: int | None = None) -> RunInfo:
    """The public record of a run; with ``count``, a summary that skips its journal.

    A summary (for lists of runs) leaves ``checkpoints`` and ``artifacts``
    empty and sets ``checkpoint_count`` to ``count``.
    """
    journal = await runtime.store.load_journal(record.id) if count is None else []
    checkpoints = [checkpoint_info(e) for e in journal]
    error_info = loads_plain(record.error_info) or {}
    return RunInfo(
        id=record.id,
        flow=record.flow,
        status=RunStatus(record.status),
        created_at=_utc(record.created_at),
        updated_at=_utc(record.updated_at),
        input=json.loads(record.input) if record.input else None,
        output=await runtime._output(record) if record.status == "completed" else None,
        error=record.error,
        error_type=error_info.get("type"),
        traceback=error_info.get("traceback"),
        checkpoints=checkpoints,
        checkpoint_count=len(journal) if count is None else count,
        pending_wait=_pending_wait(record),
        usage=Usage(
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cost_usd=record.cost_usd,
        ),
        replay_of=record.replay_of,
        parent_id=record.parent_id,
        owner=record.owner,
        metadata=loads_plain(record.metadata) or {},
        artifacts=find_artifacts(journal),
    )


def _pending_wait(record: RunRecord) -> WaitInfo | None:
    info = wait_info(record.wait)
    if info is None:
        return None
    deadline = info.get("deadline")
    return WaitInfo(
        topic=info["topic"],
        question=info.get("question"),
        schema=info.get("schema") or {},
        deadline=None if deadline is None else _utc(deadline),
    )
