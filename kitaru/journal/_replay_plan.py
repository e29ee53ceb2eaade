"""Planning replays and retries: which journal entries a new activation reuses.

Both are pure functions of a run's journal, so every check happens before
anything is written:

- a **replay** copies the entries before a chosen checkpoint into a new run
  (``replay_of`` links it to the original), replacing the values of overridden
  checkpoints; the new run executes live from the chosen point;
- a **retry** marks a failed run's failing entries ``retry``, so its next
  activation runs them again (their attempts and errors stay in the history)
  while every finished entry is reused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import ReplayError, SerializationError
from ..storage.base import JournalEntry
from ..storage.serde import Codec, codec_for, dumps_plain, loads_plain
from ._failures import RETRY
from ._registry import checkpoints_named

__all__ = ("CheckpointRef", "Overrides", "plan_replay", "resolve", "retry_entries")

#: ``"name"`` (first occurrence), ``"name#N"`` (N-th, 1-based) or a journal position.
CheckpointRef = str | int
#: Replacement values keyed by checkpoint reference.
Overrides = Mapping[str, Any] | Mapping[int, Any] | Mapping[str | int, Any]

#: Kinds of entries whose value an override may replace.
_OVERRIDABLE = ("checkpoint", "llm")
#: Kinds of failed entries a retry runs again (a child flow's run is asked again).
_RETRIED = ("checkpoint", "llm", "flow")


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What a replay writes: the reused (and overridden) entries, and where it goes live."""

    #: Entries of the new run, as they will be stored (``run_id`` still the original's).
    entries: list[JournalEntry]
    #: Journal position from which the new run executes live.
    live_from: int
    #: Override values too large to inline: position -> JSON bytes for the artifact store.
    large: dict[int, bytes]


def resolve(journal: Sequence[JournalEntry], ref: CheckpointRef, *, run_id: str) -> JournalEntry:
    """The journal entry ``ref`` names.

    Raises:
        kitaru.ReplayError: no entry matches; the message lists what the journal has.
    """
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise ReplayError(f"a checkpoint is named by a string or a position, got {ref!r}")
    if isinstance(ref, int):
        for entry in journal:
            if entry.position == ref:
                return entry
        raise ReplayError(f"run {run_id} has no journal entry at position {ref}; {_known(journal)}")
    name, hash_, count = ref.rpartition("#") if "#" in ref else (ref, "", "")
    occurrence = 1
    if hash_:
        if not count.isdigit() or int(count) < 1:
            raise ReplayError(
                f"{ref!r}: write 'name#N' with N >= 1 for the N-th call of a checkpoint"
            )
        occurrence = int(count)
    matches = [e for e in journal if e.name == name and e.kind in _OVERRIDABLE]
    if len(matches) >= occurrence:
        return matches[occurrence - 1]
    if not hash_ and ref.isdigit():  # "3" from a command line: a position
        return resolve(journal, int(ref), run_id=run_id)
    if matches:
        raise ReplayError(
            f"checkpoint {name!r} was called {len(matches)} time(s) in run {run_id}, "
            f"so {ref!r} names none of them"
        )
    raise ReplayError(f"run {run_id} recorded no checkpoint named {name!r}; {_known(journal)}")


def plan_replay(
    journal: Sequence[JournalEntry],
    *,
    run_id: str,
    from_checkpoint: CheckpointRef | None,
    overrides: Overrides,
    inline_threshold: int,
) -> ReplayPlan:
    """Work out a replay of ``run_id``; raises :class:`ReplayError` before anything is written.

    With no ``from_checkpoint``, the replay goes live right after the last
    overridden checkpoint (or from the start when nothing is overridden).
    """
    wanted: dict[CheckpointRef, Any] = {ref: value for ref, value in overrides.items()}
    targets = {ref: resolve(journal, ref, run_id=run_id) for ref in wanted}
    if from_checkpoint is not None:
        live_from = resolve(journal, from_checkpoint, run_id=run_id).position
    else:
        live_from = max((e.position + 1 for e in targets.values()), default=0)
    by_position: dict[int, CheckpointRef] = {}
    for ref, entry in targets.items():
        if entry.position >= live_from:
            raise ReplayError(
                f"override {ref!r} is {entry.kind} {entry.name!r} at position {entry.position}, "
                f"at or after the replay point (position {live_from}), where the run executes "
                "live; replay from a later checkpoint to use the override"
            )
        if entry.position in by_position:
            raise ReplayError(f"two overrides name position {entry.position} ({entry.name!r})")
        by_position[entry.position] = ref
    entries = [e for e in journal if e.position < live_from]
    large: dict[int, bytes] = {}
    now = time.time()
    for i, entry in enumerate(entries):
        named = by_position.get(entry.position)
        if named is None:
            continue
        data = _encode(entry, wanted[named], run_id=run_id, ref=named)
        inline = len(data) <= inline_threshold
        if not inline:
            large[entry.position] = data
        entries[i] = dataclasses.replace(
            entry,
            status="completed",
            attempts=0,
            started_at=now,
            duration_s=0.0,
            value=data if inline else None,
            ref=None,
            error=None,
            metadata=dumps_plain({"override": True}),
        )
    return ReplayPlan(entries, live_from, large)


def retry_entries(
    journal: Sequence[JournalEntry], failure: Mapping[str, Any] | None = None
) -> list[JournalEntry]:
    """The failed entries a retry runs again, marked ``retry``.

    A failure the flow caught and carried on from stays recorded (a replay
    must see the same exception, or the flow could take another path than its
    journal). A failure is the run's failure point when no later call of the
    run started after it ended, or when the run failed with that very
    exception (``failure``: the run's error record), re-raised after a
    cleanup call. A failed child flow is looked at again: if it was retried
    and completed meanwhile, the parent gets its output.
    """
    marked: list[JournalEntry] = []
    for entry in journal:
        if entry.status != "failed" or entry.kind not in _RETRIED:
            continue
        ended = entry.started_at + (entry.duration_s or 0.0)
        caught = any(
            later.position > entry.position and later.started_at >= ended for later in journal
        )
        if not caught or _is_run_failure(entry, failure):
            marked.append(dataclasses.replace(entry, status=RETRY))
    return marked


def _is_run_failure(entry: JournalEntry, failure: Mapping[str, Any] | None) -> bool:
    """True when the run failed with the exception ``entry`` recorded (same type and message)."""
    if not failure:
        return False
    recorded = loads_plain(entry.error) or {}
    return bool(
        recorded.get("type") == failure.get("type")
        and recorded.get("message") == failure.get("message")
    )


def _encode(entry: JournalEntry, value: Any, *, run_id: str, ref: CheckpointRef) -> bytes:
    """``value`` as the JSON the checkpoint's codec would have recorded."""
    what = f"override {ref!r} of run {run_id}"
    codec = _codec_of(entry, run_id=run_id, ref=ref)
    try:
        validated = codec.validate(codec_for(Any).dump(value, what=what), what=what)
        return codec.dump(validated, what=what)
    except SerializationError as exc:
        raise ReplayError(f"{exc}; nothing was created") from exc


def _codec_of(entry: JournalEntry, *, run_id: str, ref: CheckpointRef) -> Codec:
    if entry.kind == "llm":
        return codec_for(Any)
    found = checkpoints_named(entry.name)
    codecs = _distinct({c.codec for c in found})
    if len(codecs) > 1 and entry.value is not None:
        # Several checkpoints share the name (e.g. in different modules): the
        # run's own is one whose type can read what the run recorded.
        codecs = [c for c in codecs if _reads(c, entry.value)]
    if len(codecs) == 1:
        return codecs[0]
    if not found:
        raise ReplayError(
            f"cannot check override {ref!r}: no checkpoint named {entry.name!r} is defined in "
            "this process, so its return type is unknown. Import the module that defines "
            "the flow first (kitaru replay --module MODULE)"
        )
    raise ReplayError(
        f"cannot check override {ref!r}: several checkpoints are named {entry.name!r} with "
        f"different return types ({', '.join(c.fn.__qualname__ for c in found)}); give "
        "them distinct names with @checkpoint(name=...)"
    )


def _distinct(codecs: set[Codec]) -> list[Codec]:
    """One codec per distinct type, compared by JSON Schema (equal types built twice)."""
    by_schema: dict[str, Codec] = {}
    for codec in codecs:
        try:
            key = json.dumps(codec.json_schema(), sort_keys=True)
        except Exception:  # a type without a JSON Schema: only equal to itself
            key = f"id:{id(codec)}"
        by_schema.setdefault(key, codec)
    return list(by_schema.values())


def _reads(codec: Codec, data: bytes) -> bool:
    try:
        codec.load(data, what="recorded value")
    except SerializationError:
        return False
    return True


def _known(journal: Sequence[JournalEntry]) -> str:
    names = list(dict.fromkeys(e.name for e in journal if e.kind in _OVERRIDABLE))
    if not names:
        return "its journal holds no checkpoints"
    shown = ", ".join(repr(n) for n in names[:10])
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"its checkpoints are {shown}{more}"
