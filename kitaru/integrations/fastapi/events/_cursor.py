"""Event ids: what a client has seen of one run, as text it sends back in ``Last-Event-ID``."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from ....storage.base import JournalEntry

__all__ = ("Cursor", "generation")

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


def generation(journal: Sequence[JournalEntry]) -> str | None:
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
