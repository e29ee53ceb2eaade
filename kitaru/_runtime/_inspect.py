"""The read side: public records built from store rows, and a run's stored outcome.

:func:`run_info` is the one projection of a run: ``rt.get_run``, ``rt.list_runs``,
the CLI and the HTTP API's bodies and event summaries are all built from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._errors import FlowFailed, RunNotFound
from .._types import CheckpointInfo, RunInfo, RunStatus, Usage, WaitInfo
from ..journal._execution import wait_info
from ..storage.base import JournalEntry, RunRecord
from ..storage.serde import loads_plain

if TYPE_CHECKING:
    from ..journal._host import HostedFlow
    from ..storage.base import ArtifactStore, RunStore

__all__ = (
    "checkpoint_info",
    "failure",
    "find_artifacts",
    "find_run",
    "load_output",
    "pending_wait",
    "run_info",
)


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


def run_info(
    record: RunRecord,
    journal: Sequence[JournalEntry] | None,
    *,
    output: Any = None,
    count: int | None = None,
) -> RunInfo:
    """The public record of a run; without a ``journal``, a summary.

    A summary (for lists of runs) leaves ``checkpoints`` and ``artifacts``
    empty and sets ``checkpoint_count`` to ``count``. ``output`` is the
    decoded output of a completed run (see :func:`load_output`).
    """
    if journal is None:
        journal = []
    else:
        count = len(journal)
    checkpoints = [checkpoint_info(e) for e in journal]
    wait = pending_wait(record)
    error_info = loads_plain(record.error_info) or {}
    return RunInfo(
        id=record.id,
        flow=record.flow,
        status=RunStatus(record.status),
        created_at=_utc(record.created_at),
        updated_at=_utc(record.updated_at),
        input=json.loads(record.input) if record.input else None,
        output=output if record.status == "completed" else None,
        error=record.error,
        error_type=error_info.get("type"),
        traceback=error_info.get("traceback"),
        checkpoints=checkpoints,
        checkpoint_count=count or 0,
        pending_wait=None if wait is None else wait[1],
        wake_at=None if record.wake_at is None else _utc(record.wake_at),
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


def pending_wait(record: RunRecord) -> tuple[int | None, WaitInfo] | None:
    """The journal position and public record of the run's pending wait, if any."""
    info = wait_info(record.wait)
    if info is None:
        return None
    deadline = info.get("deadline")
    wait = WaitInfo(
        topic=info["topic"],
        question=info.get("question"),
        schema=info.get("schema") or {},
        deadline=None if deadline is None else _utc(deadline),
    )
    return info.get("position"), wait


def find_artifacts(journal: Sequence[JournalEntry]) -> dict[str, str]:
    """Name -> reference of every artifact the journal records (latest wins)."""
    found: dict[str, str] = {}
    for entry in journal:
        if entry.kind == "save" and entry.ref is not None:
            found[entry.name] = entry.ref
        elif entry.metadata is not None and b'"artifacts"' in entry.metadata:
            saved = (loads_plain(entry.metadata) or {}).get("artifacts")
            if isinstance(saved, dict):
                found.update(saved)
    return found


async def load_output(
    record: RunRecord, artifacts: ArtifactStore, flows: Mapping[str, HostedFlow]
) -> Any:
    """The decoded output of a completed run (plain JSON data if its flow is unknown here)."""
    data = record.output
    if data is None and record.output_ref is not None:
        data = await artifacts.get(record.output_ref)
    if data is None:
        return None
    flow = flows.get(record.flow)
    if flow is None:
        return json.loads(data)
    return flow.output_codec.load(data, what=f"output of run {record.id}")


def failure(run_id: str, record: RunRecord | None, original: BaseException | None) -> FlowFailed:
    """The :class:`kitaru.FlowFailed` a caller of ``result()`` gets for a failed run."""
    info = loads_plain(record.error_info) if record is not None else None
    info = info or {}
    return FlowFailed(
        run_id,
        record.error if record is not None and record.error else str(original),
        error_type=info.get("type"),
        traceback=info.get("traceback"),
        original=original,
    )


async def find_run(store: RunStore, prefix: str) -> str:
    """``rt.find_run``: the full id of the one run whose id is or starts with ``prefix``."""
    if not prefix:
        raise RunNotFound(prefix, "an empty run id matches every run; give a run id")
    if await store.get_run(prefix) is not None:
        return prefix
    found = await store.find_runs(prefix, limit=6)
    if len(found) == 1:
        return found[0]
    if not found:
        raise RunNotFound(prefix)
    shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
    raise RunNotFound(
        prefix, f"run id prefix {prefix!r} is ambiguous ({shown}); give more characters"
    )
