"""In-process run store: the whole contract in dictionaries.

A real backend, not a mock: it passes the same contract suite as SQLite. It is
the fastest way to run flows in tests and measures the runtime's own overhead.
``memory://`` gives a private store; ``memory://NAME`` shares one store between
runtimes of this process for the life of the process (so a test can "restart"
on the same data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .._errors import StorageError
from ._resource import StoreResource
from .base import (
    ACTIVE_STATUSES,
    JournalEntry,
    Message,
    RunPatch,
    RunRecord,
    Unhosted,
    child_prefix_range,
    sum_tree,
)

__all__ = ("MemoryStore",)

# Named stores live as long as the process, like a database server would.
_named: dict[str, _MemoryData] = {}


class _MemoryData:
    __slots__ = ("consumed", "journals", "keys", "messages", "next_id", "runs", "version")

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.journals: dict[str, dict[int, JournalEntry]] = {}
        # Unconsumed messages by id (dicts keep insertion = id order).
        self.messages: dict[int, Message] = {}
        self.consumed: set[int] = set()
        self.keys: dict[tuple[str, str], Message] = {}
        self.next_id = 1
        self.version = 0


class MemoryStore(StoreResource):
    """Run store kept in this process's memory; usable at once, no ``open()`` needed.

    ``aclose()`` closes this handle only: a named store's data stays for the
    next handle on the same name.
    """

    # Nothing outside Python's heap to leak.
    _warn_unclosed = False

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        name = url.partition("://")[2].strip("/")
        if name:
            data = _named.get(name)
            if data is None:
                data = _MemoryData()
                _named[name] = data
        else:
            data = _MemoryData()
        self._data = data
        self._where = f"memory store {url}"
        self._state = "open"

    def _check(self) -> _MemoryData:
        if self._state != "open":  # the common case inline: every operation passes here
            self._check_open()
        return self._data

    def _write(self) -> _MemoryData:
        data = self._check()
        data.version += 1
        return data

    async def create_run(
        self, run: RunRecord, journal: Sequence[JournalEntry] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` and its ``journal`` unless a run with its id exists."""
        data = self._write()
        existing = data.runs.get(run.id)
        if existing is not None:
            return existing, False
        for entry in journal:
            if entry.run_id != run.id:
                raise StorageError(
                    f"journal entry of run {entry.run_id} given to create run {run.id}"
                )
        data.runs[run.id] = run
        data.journals[run.id] = {entry.position: entry for entry in journal}
        return run, True

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run or ``None``."""
        return self._check().runs.get(run_id)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first (older than run ``before``)."""
        data = self._check()
        runs = [
            r
            for r in data.runs.values()
            if (status is None or r.status == status) and (flow is None or r.flow == flow)
        ]
        if before is not None:
            cursor = data.runs.get(before)
            if cursor is None:
                return []
            key = (cursor.created_at, cursor.id)
            runs = [r for r in runs if (r.created_at, r.id) < key]
        runs.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return runs[:limit]

    async def journal_counts(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Journal sizes of ``run_ids``."""
        journals = self._check().journals
        return {run_id: len(journals.get(run_id, ())) for run_id in run_ids}

    async def find_runs(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids starting with ``prefix``, in id order."""
        return sorted(i for i in self._check().runs if i.startswith(prefix))[:limit]

    async def tree_usage(self, run_id: str) -> tuple[int, float | None]:
        """Tokens and cost of the run and every run below it (child flows)."""
        low, high = child_prefix_range(run_id)
        rows = [
            (r.id, r.parent_id, r.input_tokens + r.output_tokens, r.cost_usd)
            for i, r in self._check().runs.items()
            if i == run_id or low <= i < high
        ]
        return sum_tree(run_id, rows)

    async def load_journal(self, run_id: str) -> list[JournalEntry]:
        """The run's journal ordered by position."""
        journal = self._check().journals.get(run_id, {})
        return [journal[p] for p in sorted(journal)]

    async def record(self, entries: Sequence[JournalEntry], patch: RunPatch | None = None) -> bool:
        """Write entries (never over a completed one) and apply ``patch``."""
        data = self._write()
        if patch is not None:
            run = data.runs.get(patch.run_id)
            if run is None or run.status not in patch.expect:
                return False
        # Check everything first: a failed call must write nothing, as in SQL.
        for entry in entries:
            if entry.run_id not in data.journals:
                raise StorageError(f"cannot record a journal entry for unknown run {entry.run_id}")
        for entry in entries:
            journal = data.journals[entry.run_id]
            old = journal.get(entry.position)
            if old is None or old.status != "completed":
                journal[entry.position] = entry
        if patch is not None:
            data.runs[patch.run_id] = _apply(data.runs[patch.run_id], patch)
        return True

    async def update_run(self, patch: RunPatch) -> RunRecord | None:
        """Apply ``patch`` when the run's status matches."""
        data = self._write()
        run = data.runs.get(patch.run_id)
        if run is None or run.status not in patch.expect:
            return None
        new = _apply(run, patch)
        data.runs[patch.run_id] = new
        return new

    async def claim(
        self,
        run_id: str,
        owner: str,
        *,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str] = (),
    ) -> RunRecord | None:
        """Take the lease of an active run nobody live holds."""
        data = self._write()
        run = data.runs.get(run_id)
        if run is None or not _claimable(run, owner, now, dead_owners):
            return None
        new = dataclasses.replace(run, owner=owner, lease_until=lease_until)
        data.runs[run_id] = new
        return new

    async def orphans(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Active runs of ``flows`` that could be claimed now."""
        return self._unhosted("orphans", flows, now, dead_owners, limit)

    async def post(self, message: Message) -> tuple[Message, bool]:
        """Add ``message`` to its run's mailbox unless its key was seen."""
        data = self._write()
        if message.key is not None:
            existing = data.keys.get((message.run_id, message.key))
            if existing is not None:
                return existing, False
        stored = dataclasses.replace(message, id=data.next_id)
        data.next_id += 1
        data.messages[stored.id] = stored
        if stored.key is not None:
            data.keys[(stored.run_id, stored.key)] = stored
        return stored, True

    async def message_with_key(self, run_id: str, key: str) -> Message | None:
        """The message ``run_id`` accepted with idempotency ``key``, consumed or not."""
        return self._check().keys.get((run_id, key))

    async def next_message(self, run_id: str, topic: str) -> Message | None:
        """Oldest unconsumed message of the run on ``topic``."""
        for message in self._check().messages.values():
            if message.run_id == run_id and message.topic == topic:
                return message
        return None

    async def consume(
        self, message_id: int, entry: JournalEntry | None, patch: RunPatch | None
    ) -> bool:
        """Mark consumed, record ``entry`` and apply ``patch``, all or nothing."""
        data = self._write()
        if message_id not in data.messages:
            return False
        if patch is not None:
            run = data.runs.get(patch.run_id)
            if run is None or run.status not in patch.expect:
                return False
        await self.record(() if entry is None else (entry,), patch)  # raises before writing
        del data.messages[message_id]
        data.consumed.add(message_id)
        return True

    async def messages_after(self, after_id: int, limit: int = 1000) -> list[Message]:
        """Unconsumed messages newer than ``after_id``."""
        found = [m for i, m in self._check().messages.items() if i > after_id]
        return found[:limit]

    async def due(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Suspended, unhosted runs whose deadline passed."""
        return self._unhosted("due", flows, now, dead_owners, limit)

    def _unhosted(
        self,
        kind: Unhosted,
        flows: Sequence[str],
        now: float,
        dead_owners: Sequence[str],
        limit: int,
    ) -> list[str]:
        wanted = set(flows)
        picked = _is_due if kind == "due" else _is_orphan
        found = [
            r.id
            for r in self._check().runs.values()
            if picked(r, now) and r.flow in wanted and _claimable(r, None, now, dead_owners)
        ]
        return found[:limit]

    async def next_wake(self, flows: Sequence[str], *, now: float) -> float | None:
        """Earliest deadline of a suspended run nobody hosts."""
        wanted = set(flows)
        times = [
            r.wake_at
            for r in self._check().runs.values()
            if r.status in ("waiting", "sleeping")
            and r.flow in wanted
            and r.wake_at is not None
            and (r.owner is None or (r.lease_until is not None and r.lease_until < now))
        ]
        return min(times) if times else None

    async def reset_journal(self, patch: RunPatch) -> bool:
        """Drop the run's journal and apply ``patch``."""
        data = self._write()
        run = data.runs.get(patch.run_id)
        if run is None or run.status not in patch.expect:
            return False
        data.journals[patch.run_id] = {}
        run = _apply(run, patch)
        data.runs[patch.run_id] = dataclasses.replace(run, generation=run.generation + 1)
        return True

    async def change_token(self) -> int:
        """Bumped by every write."""
        return self._check().version

    async def owners(self) -> list[str]:
        """Owners holding a lease on an active run."""
        return sorted(
            {
                r.owner
                for r in self._check().runs.values()
                if r.owner is not None and r.status in ACTIVE_STATUSES
            }
        )

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        """Extend every lease of ``owner``."""
        data = self._write()
        count = 0
        for run_id, run in list(data.runs.items()):
            if run.owner == owner:
                data.runs[run_id] = dataclasses.replace(run, lease_until=lease_until)
                count += 1
        return count

    async def release(self, owner: str, run_ids: Sequence[str] | None = None) -> None:
        """Drop ``owner``'s leases."""
        data = self._write()
        targets = data.runs.keys() if run_ids is None else run_ids
        for run_id in list(targets):
            run = data.runs.get(run_id)
            if run is not None and run.owner == owner:
                data.runs[run_id] = dataclasses.replace(run, owner=None, lease_until=None)


def _is_due(run: RunRecord, now: float) -> bool:
    return run.status in ("waiting", "sleeping") and run.wake_at is not None and run.wake_at <= now


def _is_orphan(run: RunRecord, now: float) -> bool:
    return run.status == "running"


def _claimable(run: RunRecord, owner: str | None, now: float, dead: Sequence[str]) -> bool:
    if run.status not in ACTIVE_STATUSES:
        return False
    return (
        run.owner is None
        or run.owner == owner
        or run.owner in dead
        or (run.lease_until is not None and run.lease_until < now)
    )


def _apply(run: RunRecord, patch: RunPatch) -> RunRecord:
    changes: dict[str, object] = {"updated_at": patch.updated_at}
    for name in ("status", "output", "output_ref", "error", "error_info", "input"):
        value = getattr(patch, name)
        if value is not None:
            changes[name] = value
    if patch.clear_wait:
        changes["wait"] = patch.wait
        changes["wake_at"] = patch.wake_at
        changes["wait_topics"] = patch.wait_topics
    if patch.release:
        changes["owner"] = None
        changes["lease_until"] = None
    if patch.clear_error:
        changes["error"] = None
        changes["error_info"] = None
    if patch.metadata is not None:
        changes["metadata"] = patch.metadata
    if patch.add_input_tokens or patch.add_output_tokens:
        changes["input_tokens"] = run.input_tokens + patch.add_input_tokens
        changes["output_tokens"] = run.output_tokens + patch.add_output_tokens
    if patch.add_cost_usd is not None:
        changes["cost_usd"] = (run.cost_usd or 0.0) + patch.add_cost_usd
    return dataclasses.replace(run, **changes)  # type: ignore[arg-type]
