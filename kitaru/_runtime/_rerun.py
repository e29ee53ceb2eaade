"""Running a run again: replay (a new run from a chosen checkpoint) and retry (in place).

Both plan from the run's journal first (``journal._replay_plan``), so every
check happens before anything is written; then one store call creates the new
run with its reused entries, or marks the failed entries to run again.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from .._errors import ReplayError, RunNotFound
from .._types import RunHandle, RunSource
from ..journal._replay_plan import CheckpointRef, Overrides, plan_replay, retry_entries
from ..storage.base import RunPatch, RunRecord
from ..storage.serde import loads_plain

if TYPE_CHECKING:
    from .._clock import Clock
    from .._config import RuntimeConfig
    from ..actors._supervisor import Supervisor
    from ..journal._host import HostedFlow
    from ..storage.base import ArtifactStore, RunStore
    from ._placement import Placement

__all__ = ("Rerunner", "replay", "retry")


class Rerunner(RunSource, Protocol):
    """What replay and retry need of the runtime (``kitaru.Runtime`` is the one)."""

    @property
    def store(self) -> RunStore: ...
    @property
    def config(self) -> RuntimeConfig: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def owner(self) -> str: ...
    @property
    def flows(self) -> Mapping[str, HostedFlow]: ...
    @property
    def placement(self) -> Placement: ...
    @property
    def supervisor(self) -> Supervisor: ...
    def artifacts(self) -> ArtifactStore: ...


log = logging.getLogger("kitaru.runtime")


async def replay(
    rt: Rerunner,
    run_id: str,
    from_checkpoint: CheckpointRef | None = None,
    overrides: Overrides | None = None,
) -> RunHandle:
    """``rt.replay``: plan from the journal, then create the new run in one store call."""
    record = await rt.store.get_run(run_id)
    if record is None:
        raise RunNotFound(run_id)
    journal = await rt.store.load_journal(run_id)
    plan = plan_replay(
        journal,
        run_id=run_id,
        from_checkpoint=from_checkpoint,
        overrides=overrides or {},
        inline_threshold=rt.config.inline_threshold,
    )
    new_id = uuid.uuid4().hex
    entries = []
    for entry in plan.entries:
        data = plan.large.get(entry.position)
        ref = entry.ref if data is None else await rt.artifacts().put(data)
        entries.append(dataclasses.replace(entry, run_id=new_id, ref=ref))
    now = rt.clock.now()
    hosted = record.flow in rt.flows
    new = RunRecord(
        id=new_id,
        flow=record.flow,
        status="running",
        created_at=now,
        updated_at=now,
        input=record.input,
        owner=rt.owner if hosted else None,
        lease_until=now + rt.config.lease_seconds if hosted else None,
        replay_of=run_id,
        budget=record.budget,
    )
    stored, _ = await rt.store.create_run(new, entries)
    rt.placement.touch(new_id)
    log.info(
        "replaying run %s as %s from position %d (%d entries reused)",
        run_id,
        new_id,
        plan.live_from,
        len(entries),
    )
    if hosted:
        rt.placement.activate(stored)
    else:
        await rt.placement.announce_runnable()
    return RunHandle.bound(new_id, rt)


async def retry(rt: Rerunner, run_id: str) -> RunHandle:
    """``rt.retry``: mark the failing entries ``retry`` and make the run ``running`` again."""
    record = await rt.store.get_run(run_id)
    if record is None:
        raise RunNotFound(run_id)
    if record.status != "failed":
        raise ReplayError(
            f"run {run_id} is {record.status}; only failed runs can be retried "
            "(use replay to run a finished run again)"
        )
    failure = loads_plain(record.error_info)
    marked = retry_entries(await rt.store.load_journal(run_id), failure)
    patch = RunPatch(
        run_id,
        updated_at=rt.clock.now(),
        status="running",
        clear_error=True,
        expect=("failed",),
    )
    if not await rt.store.record(marked, patch):
        raise ReplayError(f"run {run_id} changed while it was being retried; try again")
    rt.placement.touch(run_id)
    rt.supervisor.recent.pop(run_id, None)
    log.info("retrying run %s (%d failed calls run again)", run_id, len(marked))
    updated = await rt.store.get_run(run_id)
    if updated is not None and not await rt.placement.resume(updated):
        await rt.placement.announce_runnable()
    return RunHandle.bound(run_id, rt)
