"""Plain-text output of the ``kitaru`` command: tables, durations, local times, timelines.

No colour and no terminal library: every line is plain text, so output piped to
a file or another program is exactly what a terminal shows. Functions here
return lists of lines; the caller writes them in one go (a 10,000-entry
timeline is one write, not 10,000).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .. import RunInfo

__all__ = (
    "compact_json",
    "duration",
    "local_time",
    "run_duration",
    "run_lines",
    "runs_table",
    "short_ids",
    "table",
)

#: Generated run ids are 32 hex digits; like git, listings show a prefix.
SHORT_ID = 12
#: Text-mode cap on a run's input, output and metadata (``--json`` shows all).
_VALUE_CHARS = 200
_HEX = frozenset(string.hexdigits.lower())
# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def duration(seconds: float | None) -> str:
    """``0.35ms``, ``350ms``, ``1.2s``, ``3m04s``, ``2h05m``, ``3d04h``; blank if unknown."""
    if seconds is None:
        return ""
    s = max(seconds, 0.0)
    if s == 0:
        return "0ms"
    if s < 0.001:
        return f"{s * 1000:.2f}ms"
    if s < 0.9995:
        return f"{s * 1000:.0f}ms"
    if s < 59.95:
        return f"{s:.1f}s"
    whole = round(s)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    minutes = whole // 60
    if minutes < 24 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    hours = minutes // 60
    return f"{hours // 24}d{hours % 24:02d}h"


def local_time(when: datetime | None) -> str:
    """``2024-05-01 14:03:22`` in this machine's time zone; blank if unknown."""
    if when is None:
        return ""
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def compact_json(value: Any, limit: int | None = None) -> str:
    """One line of JSON, cut to ``limit`` characters (ending in ``...``) if given."""
    text = _ENCODER.encode(value)
    if limit is not None and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def run_duration(info: RunInfo, now: datetime) -> float:
    """Seconds from start to finish, or to ``now`` for a run that has not finished."""
    end = info.updated_at if info.status.finished else now
    return (end - info.created_at).total_seconds()


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Shortened form of each id, unique among ``ids`` (git-style prefixes).

    Only generated (hex) ids are shortened, to :data:`SHORT_ID` characters or
    more when two of them share that prefix; ids a user chose are kept whole.
    """
    hex_ids = [i for i in ids if len(i) > SHORT_ID and set(i) <= _HEX]
    width = SHORT_ID
    while width < max((len(i) for i in hex_ids), default=0):
        prefixes = [i[:width] for i in hex_ids]
        if len(set(prefixes)) == len(set(hex_ids)):
            break
        width += 4
    shortened = {i: i[:width] for i in hex_ids}
    return {i: shortened.get(i, i) for i in ids}


def short_id(run_id: str) -> str:
    """One id shortened as in listings (a hex id to its first :data:`SHORT_ID` characters)."""
    return short_ids([run_id])[run_id]


def table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> list[str]:
    """Columns sized to their content, two spaces apart; ``right`` columns right-aligned.

    The last column is not padded, so a long value there (metadata) does not
    widen the whole table.
    """
    body = [tuple(row) for row in rows]
    widths = [max(map(len, column)) for column in zip(header, *body, strict=True)]
    aligned_right = set(right)
    last = len(header) - 1
    # One format string per table: a 10,000-row timeline is formatted in C, not cell by cell.
    specs = [
        f"{{:>{w}}}" if i in aligned_right else "{}" if i == last else f"{{:<{w}}}"
        for i, w in enumerate(widths)
    ]
    fmt = "  ".join(specs)
    return [fmt.format(*header).rstrip(), *(fmt.format(*row).rstrip() for row in body)]


def _tokens(input_tokens: int, output_tokens: int) -> str:
    total = input_tokens + output_tokens
    return f"{total:,}" if total else ""


def _cost(cost: float | None) -> str:
    if not cost:
        return ""
    return f"${cost:.4f}" if cost < 1 else f"${cost:,.2f}"


def runs_table(infos: Sequence[RunInfo], now: datetime) -> list[str]:
    """The table printed by ``kitaru runs``."""
    ids = short_ids([i.id for i in infos])
    rows = [
        (
            ids[info.id],
            info.flow,
            info.status.value,
            local_time(info.created_at),
            duration(run_duration(info, now)),
            f"{info.checkpoint_count:,}",
            _tokens(info.usage.input_tokens, info.usage.output_tokens),
            _cost(info.usage.cost_usd),
        )
        for info in infos
    ]
    header = ("ID", "FLOW", "STATUS", "STARTED", "DURATION", "CHECKPOINTS", "TOKENS", "COST")
    return table(header, rows, right=(4, 5, 6, 7))


def _indent(text: str, prefix: str = "    ") -> list[str]:
    return [f"{prefix}{line}".rstrip() for line in text.splitlines()] or [prefix.rstrip()]


def _fields(pairs: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in pairs)
    return [f"{k.ljust(width)}  {v}".rstrip() for k, v in pairs]


def run_lines(info: RunInfo, now: datetime) -> list[str]:
    """The timeline printed by ``kitaru show``."""
    pairs: list[tuple[str, str]] = [
        ("run", info.id),
        ("flow", info.flow),
        ("status", info.status.value),
        ("started", local_time(info.created_at)),
        ("updated", local_time(info.updated_at)),
    ]
    took = duration(run_duration(info, now))
    pairs.append(("duration", took if info.status.finished else f"{took} so far"))
    for label, value in (
        ("replay of", info.replay_of),
        ("parent", info.parent_id),
        ("owner", info.owner),
    ):
        if value:
            pairs.append((label, value))
    usage = info.usage
    if usage.input_tokens or usage.output_tokens:
        pairs.append(("tokens", f"{usage.input_tokens:,} in, {usage.output_tokens:,} out"))
    if usage.cost_usd:
        pairs.append(("cost", _cost(usage.cost_usd)))
    if info.input is not None:
        pairs.append(("input", compact_json(info.input, _VALUE_CHARS)))
    if info.status == "completed":
        pairs.append(("output", compact_json(info.output, _VALUE_CHARS)))
    if info.metadata:
        pairs.append(("metadata", compact_json(info.metadata, _VALUE_CHARS)))
    lines = _fields(pairs)

    if info.artifacts:
        lines += ["", f"artifacts ({len(info.artifacts)})"]
        rows = sorted(info.artifacts.items())
        lines += ["  " + row for row in table(("NAME", "REF"), rows)]

    lines += ["", f"checkpoints ({len(info.checkpoints):,})"]
    if info.checkpoints:
        lines += _timeline(info)

    wait = info.pending_wait
    if wait is not None:
        head = f"waiting for a message on topic {wait.topic!r}"
        if wait.deadline is not None:
            head += f" until {local_time(wait.deadline)}"
        lines += ["", head]
        if wait.question:
            lines += ["  question:", *_indent(wait.question)]
        if wait.schema:
            schema = compact_json(wait.schema)
            if len(schema) > 100:
                schema_lines = json.dumps(wait.schema, indent=2, ensure_ascii=False)
                lines += ["  expected JSON Schema:", *_indent(schema_lines)]
            else:
                lines.append(f"  expected JSON Schema: {schema}")
        topic = "" if wait.topic == "input" else f" --topic {wait.topic}"
        lines.append(f"  answer with: kitaru send {short_id(info.id)} VALUE{topic}")

    if info.status == "failed" or info.error:
        lines += ["", f"error: {info.error or 'unknown'}"]
        if info.traceback:
            lines += ["traceback:", *_indent(info.traceback.rstrip("\n"), "  ")]
        if info.status == "failed":
            lines.append(f"resume it from the failure point with: kitaru retry {short_id(info.id)}")
    return lines


def _timeline(info: RunInfo) -> list[str]:
    header: tuple[str, ...] = ("#", "NAME", "KIND", "STATUS", "ATTEMPTS", "DURATION", "METADATA")
    rows: list[tuple[str, ...]] = []
    extra: dict[int, list[str]] = {}
    for index, cp in enumerate(info.checkpoints):
        rows.append(
            (
                str(cp.position),
                cp.name,
                cp.kind,
                cp.status,
                str(cp.attempts),
                duration(cp.duration_s),
                compact_json(cp.metadata) if cp.metadata else "",
            )
        )
        notes = []
        if cp.artifact:
            notes.append(f"artifact: {cp.artifact}")
        for attempt, error in enumerate(cp.errors, start=1):
            notes.append(f"attempt {attempt} failed: {error}")
        if notes:
            extra[index] = notes
    if not any(row[-1] for row in rows):  # no metadata anywhere: no empty column
        header, rows = header[:-1], [row[:-1] for row in rows]
    lines = table(header, rows, right=(0, 4, 5))
    if not extra:
        return ["  " + line for line in lines]
    # Notes sit under the NAME column.
    pad = " " * (max(len(row[0]) for row in rows) + 4)
    out = ["  " + lines[0]]
    for index, line in enumerate(lines[1:]):
        out.append("  " + line)
        out += [pad + note for note in extra.get(index, ())]
    return out
