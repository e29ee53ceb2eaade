"""One activation of a run: its journal cursor and the commit of durable calls.

Rehydration re-executes the flow from the top. Each durable call takes the next
position when it is *called* (so gathered calls keep their order), looks that
position up in the journal and, if it is recorded, returns the stored result
instead of running. A recorded call with another name or kind means the flow's
code changed: :class:`NonDeterminismError`, never a silent mix of results.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import traceback
from typing import TYPE_CHECKING, Any, overload

from ._errors import CheckpointFailed, NonDeterminismError, RuntimeStateError
from .storage.base import JournalEntry, RunPatch
from .storage.serde import Codec, What, dumps_plain, loads_plain

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .actors._flow_actor import FlowActor

__all__ = ("RETRY", "Execution", "error_record", "rebuild_error", "retry_history")

#: Status of a failed journal entry that ``rt.retry`` marked to run again.
RETRY = "retry"


class Execution:
    """Per-activation state of a run, shared by every durable call it makes."""

    __slots__ = (
        "actor",
        "busy",
        "closed",
        "evicted",
        "flow_name",
        "journal",
        "metadata",
        "metadata_dirty",
        "next_position",
        "run_id",
        "runtime",
        "suspensions",
    )

    def __init__(
        self,
        runtime: Runtime,
        run_id: str,
        flow_name: str,
        journal: dict[int, JournalEntry],
        *,
        actor: FlowActor | None = None,
        suspensions: dict[int, dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self.flow_name = flow_name
        self.journal = journal
        self.actor = actor
        self.next_position = 0
        #: Set when the activation ended; a stray call (e.g. from an abandoned
        #: sync-flow thread) must not write into the run any more.
        self.closed = False
        #: Set when the activation was evicted (idle); see ``actors._mailbox``.
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
            from .actors._mailbox import Evicted

            raise Evicted
        if self.closed:
            raise RuntimeStateError(
                f"run {self.run_id} is no longer active in this runtime (cancelled, "
                "finished or shut down); its flow code cannot make durable calls"
            )
        position = self.next_position
        self.next_position = position + 1
        return position

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
            data = await self.runtime.artifacts().get(entry.ref)
        if data is None:
            data = b"null"
        return codec.load(data, what=what)

    async def store_value(self, data: bytes) -> tuple[bytes | None, str | None]:
        """Inline small values; put large ones in the artifact store."""
        if len(data) > self.runtime.config.inline_threshold:
            return None, await self.runtime.artifacts().put(data)
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
        patch = self.with_metadata(patch)
        if not await self.runtime.store.record((entry,), patch):
            self._stop()
        self.journal[entry.position] = entry
        self.runtime.events.touch(self.run_id)

    def prior_deadline(self, position: int) -> float | None:
        """The deadline a suspension at ``position`` recorded before a rehydration."""
        deadline = self.suspensions.get(position, {}).get("deadline")
        return None if deadline is None else float(deadline)

    async def suspend(self, position: int, info: dict[str, Any]) -> None:
        """Record a pending wait or sleep on the run row (visible from outside)."""
        from .actors._mailbox import suspension_patch

        self.suspensions[position] = info
        patch = suspension_patch(self.run_id, self.suspensions, self.runtime.clock.now())
        patch = self.with_metadata(patch)
        if await self.runtime.store.update_run(patch) is None:
            self._stop()
        self.runtime.events.touch(self.run_id)

    def resume_patch(self, position: int) -> RunPatch | None:
        """The run-row change that drops the suspension at ``position`` (if any)."""
        from .actors._mailbox import suspension_patch

        if self.suspensions.pop(position, None) is None:
            return None
        return suspension_patch(self.run_id, self.suspensions, self.runtime.clock.now())

    def _stop(self) -> None:
        # The run is no longer active (cancelled from elsewhere): unwind quietly.
        from .actors._mailbox import Evicted

        self.closed = True
        raise Evicted

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


def error_record(exc: BaseException, attempts: list[str] | None = None) -> dict[str, Any]:
    """Plain-data description of an exception, as stored in the journal."""
    cls = type(exc)
    record: dict[str, Any] = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    args = [a for a in exc.args if isinstance(a, str | int | float | bool | None)]
    if len(args) == len(exc.args):
        record["args"] = args
    if attempts:
        record["attempts"] = attempts
    return record


def retry_history(entry: JournalEntry) -> tuple[int, list[str]]:
    """Attempts so far and their errors, from an entry ``rt.retry`` marked to run again."""
    errors = (loads_plain(entry.metadata) or {}).get("errors") or []
    return entry.attempts, [str(e) for e in errors]


def describe_error(exc: BaseException) -> str:
    """One line: ``"ValueError: bad input"``."""
    message = str(exc)
    return f"{type(exc).__qualname__}: {message}" if message else type(exc).__qualname__


def rebuild_error(name: str, data: bytes | None) -> Exception:
    """Recreate a recorded failure so a replayed flow sees the same exception type.

    The original class is rebuilt from its dotted name and plain arguments when
    possible; otherwise :class:`CheckpointFailed` carries the type and message.
    """
    record = loads_plain(data) or {}
    type_name: str = record.get("type", "Exception")
    message: str = record.get("message", "")
    args = record.get("args")
    module_name, _, qualname = type_name.rpartition(".")
    if args is not None and module_name:
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, type) and issubclass(obj, Exception):
                exc = obj(*args)
                if str(exc) == message:
                    return exc
        except Exception:
            pass
    return CheckpointFailed(name, type_name, message)
