"""One activation of a run: its journal cursor and the commit of durable calls.

Rehydration re-executes the flow from the top. Each durable call takes the next
position when it is *called* (so gathered calls keep their order), looks that
position up in the journal and, if it is recorded, returns the stored result
instead of running. A recorded call with another name or kind means the flow's
code changed: :class:`NonDeterminismError`, never a silent mix of results.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any, overload

from .._errors import NonDeterminismError, RuntimeStateError
from ..storage.base import JournalEntry, RunPatch
from ..storage.serde import Codec, What, dumps_plain
from ._signals import EvictionSignal

if TYPE_CHECKING:
    from ..storage.base import RunRecord
    from ._host import Activation, Host, HostedFlow

__all__ = ("Execution", "suspension_patch", "wait_info")


class Execution:
    """Per-activation state of a run, shared by every durable call it makes."""

    __slots__ = (
        "activation",
        "busy",
        "closed",
        "evicted",
        "flow",
        "host",
        "journal",
        "metadata",
        "metadata_dirty",
        "next_position",
        "record",
        "run_id",
        "suspensions",
    )

    def __init__(
        self,
        host: Host,
        record: RunRecord,
        flow: HostedFlow,
        journal: dict[int, JournalEntry],
        *,
        activation: Activation | None = None,
        suspensions: dict[int, dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        #: The run's row as this activation found it (budget, parent).
        self.record = record
        self.run_id = record.id
        self.flow = flow
        self.journal = journal
        #: The live activation when the run is hosted by an actor (suspensions need it).
        self.activation = activation
        self.next_position = 0
        #: Set when the activation ended; a stray call (e.g. from an abandoned
        #: sync-flow thread) must not write into the run any more.
        self.closed = False
        #: Set when the activation was evicted (idle); see ``journal._suspend``.
        self.evicted = False
        #: Checkpoint bodies running right now: a flow is only evicted when every
        #: durable call in flight is a wait or a sleep.
        self.busy = 0
        #: Pending waits and sleeps by position, as stored on the run row.
        self.suspensions: dict[int, dict[str, Any]] = suspensions or {}
        #: The run's ``kitaru.log`` metadata; written with the run's next change.
        self.metadata: dict[str, Any] = metadata or {}
        self.metadata_dirty = False

    def take_position(self) -> int:
        """Reserve the next journal position (at call time, not at await time)."""
        if self.evicted:
            # User code swallowed the eviction signal and carried on.
            raise EvictionSignal
        if self.closed:
            raise RuntimeStateError(
                f"run {self.run_id} is no longer active in this runtime (cancelled, "
                "finished or shut down); its flow code cannot make durable calls"
            )
        position = self.next_position
        self.next_position = position + 1
        return position

    def call_id(self, position: int) -> str:
        """Identifies the call at ``position`` across the run's generations.

        ``"7"`` in a run's first journal; ``"g2.7"`` after two
        ``continue_as_new``, whose journals start again at position 0. Message
        keys and child run ids are built from it, so a later round's call never
        takes an earlier round's identity (its send dropped as a duplicate,
        its child flow answered by the earlier child).
        """
        generation = self.record.generation
        return str(position) if generation == 0 else f"g{generation}.{position}"

    def recorded(self, position: int, name: str, kind: str) -> JournalEntry | None:
        """The journal entry at ``position`` if it matches ``name`` and ``kind``."""
        entry = self.journal.get(position)
        if entry is None:
            return None
        if entry.name != name or entry.kind != kind:
            raise NonDeterminismError(
                self.run_id, position, f"{entry.kind} {entry.name}", f"{kind} {name}"
            )
        return entry

    async def load(self, entry: JournalEntry, codec: Codec, what: What) -> Any:
        """Decode a recorded value, fetching it from the artifact store if needed."""
        data = entry.value
        if data is None and entry.ref is not None:
            data = await self.host.artifacts().get(entry.ref)
        if data is None:
            data = b"null"
        return codec.load(data, what=what)

    async def store_value(self, data: bytes) -> tuple[bytes | None, str | None]:
        """Inline small values; put large ones in the artifact store."""
        if len(data) > self.host.config.inline_threshold:
            return None, await self.host.artifacts().put(data)
        return data, None

    def log(self, metadata: dict[str, Any]) -> None:
        """Merge run-level metadata; it is stored with the run's next change."""
        self.metadata.update(metadata)
        self.metadata_dirty = True

    @overload
    def with_metadata(self, patch: RunPatch) -> RunPatch: ...
    @overload
    def with_metadata(self, patch: None) -> RunPatch | None: ...

    def with_metadata(self, patch: RunPatch | None) -> RunPatch | None:
        """``patch`` carrying the run's metadata if it changed since the last write."""
        if not self.metadata_dirty:
            return patch
        self.metadata_dirty = False
        data = dumps_plain(self.metadata)
        if patch is None:
            return RunPatch(self.run_id, updated_at=time.time(), metadata=data)
        return dataclasses.replace(patch, metadata=data)

    async def commit(self, entry: JournalEntry, patch: RunPatch | None = None) -> None:
        """Make ``entry`` (and ``patch`` of the run) durable; returns once committed."""
        if self.metadata_dirty:
            patch = self.with_metadata(patch)
        if not await self.host.store.record((entry,), patch):
            self._stop()
        self.journal[entry.position] = entry
        self.host.touch(self.run_id)

    def prior_deadline(self, position: int) -> float | None:
        """The deadline a suspension at ``position`` recorded before a rehydration."""
        deadline = self.suspensions.get(position, {}).get("deadline")
        return None if deadline is None else float(deadline)

    async def suspend(self, position: int, info: dict[str, Any]) -> None:
        """Record a pending wait or sleep on the run row (visible from outside)."""
        self.suspensions[position] = info
        patch = suspension_patch(self.run_id, self.suspensions, self.host.clock.now())
        patch = self.with_metadata(patch)
        if await self.host.store.update_run(patch) is None:
            self._stop()
        self.host.touch(self.run_id)

    def resume_patch(self, position: int) -> RunPatch | None:
        """The run-row change that drops the suspension at ``position`` (if any)."""
        if self.suspensions.pop(position, None) is None:
            return None
        return suspension_patch(self.run_id, self.suspensions, self.host.clock.now())

    def _stop(self) -> None:
        # The run is no longer active (cancelled from elsewhere): unwind quietly.
        self.closed = True
        raise EvictionSignal

    def entry(
        self,
        position: int,
        name: str,
        kind: str,
        *,
        started_at: float,
        attempts: int = 1,
        value: bytes | None = None,
        ref: str | None = None,
        error: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> JournalEntry:
        """Build a finished journal entry for this run."""
        return JournalEntry(
            run_id=self.run_id,
            position=position,
            name=name,
            kind=kind,
            status="failed" if error is not None else "completed",
            attempts=attempts,
            started_at=started_at,
            duration_s=time.time() - started_at,
            value=value,
            ref=ref,
            error=None if error is None else dumps_plain(error),
            metadata=dumps_plain(metadata) if metadata else None,
        )


def wait_info(data: bytes | None) -> dict[str, Any] | None:
    """The first pending wait (kind ``wait``) of a run's suspension list."""
    if data is None:
        return None
    for item in json.loads(data):
        if item.get("kind") == "wait":
            return dict(item)
    return None


def suspension_patch(run_id: str, suspensions: dict[int, dict[str, Any]], now: float) -> RunPatch:
    """The run-row change that records the current set of suspensions."""
    if not suspensions:
        return RunPatch(run_id, updated_at=now, status="running", clear_wait=True)
    items = [suspensions[p] for p in sorted(suspensions)]
    waits = [i for i in items if i["kind"] == "wait"]
    deadlines = [i["deadline"] for i in items if i.get("deadline") is not None]
    return RunPatch(
        run_id,
        updated_at=now,
        status="waiting" if waits else "sleeping",
        wait=dumps_plain(items),
        wake_at=min(deadlines) if deadlines else None,
        wait_topics=",".join(sorted({i["topic"] for i in waits})) or None,
        clear_wait=True,
    )
