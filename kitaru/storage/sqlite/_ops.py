"""The SQL of the SQLite run store, as plain functions of a :class:`sqlite3.Connection`.

Every function here runs on a connection's worker thread: mutations inside a
transaction the group committer opened (so they never ``BEGIN`` or
``COMMIT`` themselves, and may be re-run if their batch fails), reads on the
reader connection in autocommit mode. Each mirrors the method of the same
name in :mod:`kitaru.storage.memory`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from kitaru._errors import StorageError

from ..base import (
    ACTIVE_STATUSES,
    JournalEntry,
    Message,
    RunPatch,
    RunRecord,
    Unhosted,
    child_prefix_range,
    sum_tree,
)

__all__ = ("PATCH_FIELDS",)

RUN_COLUMNS = tuple(f.name for f in dataclasses.fields(RunRecord))
ENTRY_COLUMNS = tuple(f.name for f in dataclasses.fields(JournalEntry))
MESSAGE_COLUMNS = tuple(f.name for f in dataclasses.fields(Message))
#: RunPatch fields the UPDATE below understands; a test fails when RunPatch grows.
PATCH_FIELDS = frozenset(
    {
        "run_id",
        "updated_at",
        "status",
        "output",
        "output_ref",
        "error",
        "error_info",
        "input",
        "clear_wait",
        "wait",
        "wake_at",
        "wait_topics",
        "release",
        "expect",
        "clear_error",
        "metadata",
        "add_input_tokens",
        "add_output_tokens",
        "add_cost_usd",
    }
)

run_values = attrgetter(*RUN_COLUMNS)
entry_values = attrgetter(*ENTRY_COLUMNS)
_SUSPENDED = ("waiting", "sleeping")


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _in(column: str, count: int) -> str:
    return f"{column} IN ({_marks(count)})"


_SELECT_RUN = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
_GET_RUN = f"{_SELECT_RUN} WHERE id = ?"
_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({_marks(len(RUN_COLUMNS))}) "
    "ON CONFLICT (id) DO NOTHING"
)
# A completed entry is final: the upsert leaves it alone, anything else is replaced.
_UPSERT_ENTRY = (
    f"INSERT INTO journal ({', '.join(ENTRY_COLUMNS)}) VALUES ({_marks(len(ENTRY_COLUMNS))}) "
    "ON CONFLICT (run_id, position) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ENTRY_COLUMNS[2:])
    + " WHERE journal.status != 'completed'"
)
_LOAD_JOURNAL = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM journal WHERE run_id = ? ORDER BY position"
_PATCH_SET = (
    "updated_at = :updated_at, status = COALESCE(:status, status), "
    "output = COALESCE(:output, output), output_ref = COALESCE(:output_ref, output_ref), "
    "error = CASE WHEN :clear_error THEN NULL ELSE COALESCE(:error, error) END, "
    "error_info = CASE WHEN :clear_error THEN NULL ELSE COALESCE(:error_info, error_info) END, "
    "metadata = COALESCE(:metadata, metadata), "
    "input_tokens = input_tokens + :add_input_tokens, "
    "output_tokens = output_tokens + :add_output_tokens, "
    "cost_usd = CASE WHEN :add_cost_usd IS NULL THEN cost_usd "
    "ELSE COALESCE(cost_usd, 0) + :add_cost_usd END, "
    "input = COALESCE(:input, input), "
    "wait = CASE WHEN :clear_wait THEN :wait ELSE wait END, "
    "wake_at = CASE WHEN :clear_wait THEN :wake_at ELSE wake_at END, "
    "wait_topics = CASE WHEN :clear_wait THEN :wait_topics ELSE wait_topics END, "
    "owner = CASE WHEN :release THEN NULL ELSE owner END, "
    "lease_until = CASE WHEN :release THEN NULL ELSE lease_until END"
)
_SELECT_MESSAGE = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages"


def _claimable(dead: int, *, own: bool) -> str:
    """SQL twin of ``memory._claimable`` (the caller adds the status test).

    Free, already ours, held by a dead owner, or the lease expired before now.
    A NULL ``lease_until`` makes the comparison NULL, i.e. not expired.
    """
    terms = ["owner IS NULL"]
    if own:
        terms.append("owner = ?")
    if dead:
        terms.append(_in("owner", dead))
    terms.append("lease_until < ?")
    return f"({' OR '.join(terms)})"


# -- reads ----------------------------------------------------------------------------


def get_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    """The run, or ``None``."""
    row = conn.execute(_GET_RUN, (run_id,)).fetchone()
    return None if row is None else RunRecord(*row)


def list_runs_query(
    status: str | None, flow: str | None, limit: int, before: str | None = None
) -> tuple[str, list[Any]]:
    """SQL and parameters of :func:`list_runs`; every filter combination uses an index."""
    where: list[str] = []
    params: list[Any] = []
    if before is not None:
        # Row values compare lexicographically: older, or as old with a smaller id.
        where.append("(created_at, id) < (SELECT created_at, id FROM runs WHERE id = ?)")
        params.append(before)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if flow is not None:
        where.append("flow = ?")
        params.append(flow)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    params.append(limit)
    return f"{_SELECT_RUN}{clause} ORDER BY created_at DESC, id DESC LIMIT ?", params


def list_runs(
    conn: sqlite3.Connection,
    status: str | None,
    flow: str | None,
    limit: int,
    before: str | None = None,
) -> list[RunRecord]:
    """Runs matching the filters, newest first."""
    sql, params = list_runs_query(status, flow, limit, before)
    return [RunRecord(*row) for row in conn.execute(sql, params)]


def journal_counts(conn: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, int]:
    """Journal sizes: one index range count per run."""
    counts: dict[str, int] = {}
    for start in range(0, len(run_ids), 500):  # stay under SQLite's variable limit
        chunk = run_ids[start : start + 500]
        where = _in("run_id", len(chunk))
        sql = f"SELECT run_id, COUNT(*) FROM journal WHERE {where} GROUP BY run_id"
        counts.update(conn.execute(sql, list(chunk)).fetchall())
    return counts


def find_runs(conn: sqlite3.Connection, prefix: str, limit: int) -> list[str]:
    """Ids starting with ``prefix``: a range scan of the primary key (LIKE would not use it)."""
    params: list[Any]
    if not prefix:
        sql, params = "SELECT id FROM runs ORDER BY id LIMIT ?", [limit]
    else:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        sql = "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
        params = [prefix, upper, limit]
    return [row[0] for row in conn.execute(sql, params)]


def tree_usage(conn: sqlite3.Connection, run_id: str) -> tuple[int, float | None]:
    """Tokens and cost of the run and every run below it: a range scan of the primary key."""
    low, high = child_prefix_range(run_id)
    rows = conn.execute(
        "SELECT id, parent_id, input_tokens + output_tokens, cost_usd FROM runs "
        "WHERE id = ? OR (id >= ? AND id < ?)",
        (run_id, low, high),
    )
    return sum_tree(run_id, rows)


def load_journal(conn: sqlite3.Connection, run_id: str) -> list[JournalEntry]:
    """The run's journal ordered by position."""
    return [JournalEntry(*row) for row in conn.execute(_LOAD_JOURNAL, (run_id,))]


def unhosted(
    conn: sqlite3.Connection,
    kind: Unhosted,
    flows: Sequence[str],
    now: float,
    dead: Sequence[str],
    limit: int,
) -> list[str]:
    """Runs of ``flows`` nobody live hosts: due suspended ones, or orphaned running ones.

    Due runs (``wake_at`` passed) come most overdue first, orphans oldest first.
    """
    if not flows:
        return []
    params: tuple[Any, ...] = ()
    if kind == "due":
        pick = f"wake_at IS NOT NULL AND wake_at <= ? AND {_in('status', len(_SUSPENDED))}"
        order, params = "wake_at, id", (now, *_SUSPENDED)
    else:
        pick, order = "status = 'running'", "created_at, id"
    sql = (
        f"SELECT id FROM runs WHERE {pick} AND {_in('flow', len(flows))} "
        f"AND {_claimable(len(dead), own=False)} ORDER BY {order} LIMIT ?"
    )
    return [row[0] for row in conn.execute(sql, (*params, *flows, *dead, now, limit))]


def next_wake(conn: sqlite3.Connection, flows: Sequence[str], now: float) -> float | None:
    """Earliest ``wake_at`` of a suspended run of ``flows`` nobody hosts."""
    if not flows:
        return None
    sql = (
        "SELECT MIN(wake_at) FROM runs WHERE wake_at IS NOT NULL "
        f"AND {_in('status', len(_SUSPENDED))} AND {_in('flow', len(flows))} "
        "AND (owner IS NULL OR lease_until < ?)"
    )
    found: float | None = conn.execute(sql, (*_SUSPENDED, *flows, now)).fetchone()[0]
    return found


def owners(conn: sqlite3.Connection) -> list[str]:
    """Distinct owners holding the lease of an active run."""
    sql = (
        "SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL "
        f"AND {_in('status', len(ACTIVE_STATUSES))} ORDER BY owner"
    )
    return [row[0] for row in conn.execute(sql, ACTIVE_STATUSES)]


def next_message(conn: sqlite3.Connection, run_id: str, topic: str) -> Message | None:
    """Oldest unconsumed message of ``run_id`` on ``topic``."""
    sql = f"{_SELECT_MESSAGE} WHERE run_id = ? AND topic = ? AND consumed = 0 ORDER BY id LIMIT 1"
    row = conn.execute(sql, (run_id, topic)).fetchone()
    return None if row is None else Message(*row)


def message_with_key(conn: sqlite3.Connection, run_id: str, key: str) -> Message | None:
    """The message ``run_id`` accepted with idempotency ``key``, consumed or not."""
    row = conn.execute(f"{_SELECT_MESSAGE} WHERE run_id = ? AND key = ?", (run_id, key)).fetchone()
    return None if row is None else Message(*row)


def messages_after(conn: sqlite3.Connection, after_id: int, limit: int) -> list[Message]:
    """Unconsumed messages with an id above ``after_id``, oldest first."""
    sql = f"{_SELECT_MESSAGE} WHERE id > ? AND consumed = 0 ORDER BY id LIMIT ?"
    return [Message(*row) for row in conn.execute(sql, (after_id, limit))]


def change_token(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection (our writer, or another process) commits."""
    # data_version ignores this connection's own commits; the reader never writes.
    token: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return token


# -- mutations (inside the group committer's transaction) --------------------------------


def create_run(
    conn: sqlite3.Connection, run: RunRecord, journal: Sequence[JournalEntry] = ()
) -> tuple[RunRecord, bool]:
    """Insert ``run`` and ``journal`` unless its id exists; the stored record and whether new."""
    for entry in journal:
        if entry.run_id != run.id:
            raise StorageError(f"journal entry of run {entry.run_id} given to create run {run.id}")
    if conn.execute(_INSERT_RUN, run_values(run)).rowcount == 1:
        conn.executemany(_UPSERT_ENTRY, [entry_values(entry) for entry in journal])
        return run, True
    existing = get_run(conn, run.id)
    if existing is None:  # pragma: no cover - the insert just conflicted on this id
        raise StorageError(f"run {run.id} vanished while it was being created")
    return existing, False


def record(
    conn: sqlite3.Connection, entries: Sequence[JournalEntry], patch: RunPatch | None
) -> bool:
    """Upsert entries (never over a completed one) and apply ``patch``, or nothing."""
    if patch is None:
        _write_entries(conn, entries)
        return True
    # The guarded UPDATE goes first: if it refuses, nothing was written, and
    # if it applies, the patched run exists (its entries need no probe).
    if not _patch_run(conn, patch):
        return False
    _write_entries(conn, entries, exists=patch.run_id)
    return True


def update_run(conn: sqlite3.Connection, patch: RunPatch) -> RunRecord | None:
    """Apply ``patch`` if the run's status matches; the updated record or ``None``."""
    return get_run(conn, patch.run_id) if _patch_run(conn, patch) else None


def claim(
    conn: sqlite3.Connection,
    run_id: str,
    owner: str,
    now: float,
    lease_until: float,
    dead: Sequence[str],
) -> RunRecord | None:
    """Take the lease of an active run nobody live holds."""
    sql = (
        f"UPDATE runs SET owner = ?, lease_until = ? WHERE id = ? "
        f"AND {_in('status', len(ACTIVE_STATUSES))} AND {_claimable(len(dead), own=True)}"
    )
    params = (owner, lease_until, run_id, *ACTIVE_STATUSES, owner, *dead, now)
    row = conn.execute(f"{sql} RETURNING {', '.join(RUN_COLUMNS)}", params).fetchone()
    return None if row is None else RunRecord(*row)


def renew_leases(conn: sqlite3.Connection, owner: str, lease_until: float) -> int:
    """Extend every lease of ``owner``; how many."""
    sql = "UPDATE runs SET lease_until = ? WHERE owner = ?"
    return conn.execute(sql, (lease_until, owner)).rowcount


def release(conn: sqlite3.Connection, owner: str, run_ids: Sequence[str] | None) -> None:
    """Drop ``owner``'s leases, on all its runs or on ``run_ids``."""
    sql = "UPDATE runs SET owner = NULL, lease_until = NULL WHERE owner = ?"
    if run_ids is None:
        conn.execute(sql, (owner,))
    else:
        conn.executemany(f"{sql} AND id = ?", [(owner, run_id) for run_id in run_ids])


def post(conn: sqlite3.Connection, message: Message) -> tuple[Message, bool]:
    """Store ``message`` with a fresh id, unless its key was seen for the run."""
    if message.key is not None:
        sql = f"{_SELECT_MESSAGE} WHERE run_id = ? AND key = ?"
        row = conn.execute(sql, (message.run_id, message.key)).fetchone()
        if row is not None:
            return Message(*row), False
    columns = MESSAGE_COLUMNS[1:]  # the id is assigned by SQLite
    sql = f"INSERT INTO messages ({', '.join(columns)}) VALUES ({_marks(len(columns))})"
    cursor = conn.execute(sql, [getattr(message, c) for c in columns])
    assert cursor.lastrowid is not None
    return dataclasses.replace(message, id=cursor.lastrowid), True


def consume(
    conn: sqlite3.Connection, message_id: int, entry: JournalEntry | None, patch: RunPatch | None
) -> bool:
    """Mark the message consumed, record ``entry`` and apply ``patch``, or nothing."""
    found = conn.execute("SELECT 1 FROM messages WHERE id = ? AND consumed = 0", (message_id,))
    if found.fetchone() is None:
        return False
    # Nothing is written before the last check that may refuse (the patch's
    # guard, applied by its own UPDATE): an op that returns False must leave
    # the batch's transaction as it found it.
    if patch is not None and not _patch_run(conn, patch):
        return False
    conn.execute("UPDATE messages SET consumed = 1 WHERE id = ?", (message_id,))
    if entry is not None:
        _write_entries(conn, (entry,), exists=None if patch is None else patch.run_id)
    return True


def reset_journal(conn: sqlite3.Connection, patch: RunPatch) -> bool:
    """Delete the run's journal and apply ``patch``, if its status matches."""
    if not _patch_run(conn, patch):
        return False
    conn.execute("DELETE FROM journal WHERE run_id = ?", (patch.run_id,))
    conn.execute("UPDATE runs SET generation = generation + 1 WHERE id = ?", (patch.run_id,))
    return True


def _write_entries(
    conn: sqlite3.Connection, entries: Sequence[JournalEntry], exists: str | None = None
) -> None:
    """Upsert entries of existing runs (``exists``: a run the caller knows exists)."""
    for run_id in dict.fromkeys(entry.run_id for entry in entries):
        if run_id == exists:
            continue
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise StorageError(f"cannot record a journal entry for unknown run {run_id}")
    conn.executemany(_UPSERT_ENTRY, [entry_values(entry) for entry in entries])


def _patch_run(conn: sqlite3.Connection, patch: RunPatch) -> bool:
    """Apply ``patch`` if the run's status is in ``patch.expect``; whether it did."""
    params: dict[str, Any] = {
        name: getattr(patch, name) for name in PATCH_FIELDS if name != "expect"
    }
    expect = [f":expect{i}" for i in range(len(patch.expect))]
    params.update({name[1:]: status for name, status in zip(expect, patch.expect, strict=True)})
    sql = f"UPDATE runs SET {_PATCH_SET} WHERE id = :run_id AND status IN ({', '.join(expect)})"
    return conn.execute(sql, params).rowcount > 0
