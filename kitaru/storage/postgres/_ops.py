"""The PostgreSQL run store's operations, as plain functions of an asyncpg connection.

Each function mirrors the method of the same name in
:mod:`kitaru.storage.memory`. Every mutation is one statement (its own
transaction, one round trip), except :func:`consume`, which needs three.

Mutations take ``uncertain``: ``True`` when an earlier attempt of the same
call lost its connection after sending its statement, so it may have
committed. Writes whose result would differ on a second run (a guarded patch
refusing because the first attempt already changed the status, a post adding
a second message, ...) then look for the first attempt's effects before and,
if refused, after running again; see :mod:`kitaru.storage.postgres`.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kitaru._errors import StorageError

from ..base import (
    JournalEntry,
    Message,
    RunPatch,
    RunRecord,
    child_prefix_range,
    sum_tree,
)
from ._sql import ACTIVE, ENTRY_COLUMNS, PATCH_FIELDS, RUN_COLUMNS, Queries

if TYPE_CHECKING:
    from asyncpg import Connection as _Connection
    from asyncpg.pool import PoolConnectionProxy

    #: A connection of its own (migrations, the listener) or one lent by the pool.
    Connection = _Connection[Any] | PoolConnectionProxy[Any]

__all__ = ("Context", "patch_applied", "write_batch")


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What every statement of one store needs besides its arguments."""

    q: Queries
    #: LISTEN/NOTIFY channel and the payloads this store sends ("kind:origin").
    notify: Mapping[str, str]
    #: The advisory lock key that orders message ids.
    post_lock: tuple[int, int]
    #: Ids of runs this store has seen exist (see :func:`known`).
    runs_seen: set[str] = dataclasses.field(default_factory=set)


#: ``Context.runs_seen`` is emptied when it grows past this many ids.
RUNS_SEEN_MAX = 10_000


def known(cx: Context, run_ids: Iterable[str]) -> None:
    """Note that these runs exist.

    Runs are never deleted, so a journal entry of a run seen before needs no
    existence probe: the probe is most of what the server spends on a
    sequential checkpoint beyond a plain INSERT. Past ``RUNS_SEEN_MAX`` ids
    the set starts over, and each run pays one probe again.
    """
    seen = cx.runs_seen
    if len(seen) >= RUNS_SEEN_MAX:
        seen.clear()
    seen.update(run_ids)


class _Refused(Exception):
    """Rolls a multi-statement transaction back when a guard does not hold."""


# -- values ---------------------------------------------------------------------------


def patch_values(patch: RunPatch) -> dict[str, Any]:
    """Placeholder values of a patch (``p_*``)."""
    values = {f"p_{name}": getattr(patch, name) for name in PATCH_FIELDS}
    values["p_expect"] = list(patch.expect)
    return values


def entry_values(entries: Sequence[JournalEntry]) -> dict[str, Any]:
    """Placeholder values of journal entries, one array per column (``e_*``)."""
    return {f"e_{c}": [getattr(entry, c) for entry in entries] for c in ENTRY_COLUMNS}


def run_arrays(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Placeholder values of run rows, one array per column (``r_*``)."""
    return {f"r_{c}": [getattr(run, c) for run in runs] for c in RUN_COLUMNS}


def run_values(run: RunRecord) -> dict[str, Any]:
    """Placeholder values of a run row (``r_*``)."""
    return {f"r_{c}": getattr(run, c) for c in RUN_COLUMNS}


_entry_fields = operator.attrgetter(*ENTRY_COLUMNS)


def _entry_value(entry: JournalEntry) -> dict[str, Any]:
    """Placeholder values of one journal entry (``e_*``)."""
    return {f"e_{c}": getattr(entry, c) for c in ENTRY_COLUMNS}


async def write_batch(
    conn: Connection,
    cx: Context,
    runs: Sequence[RunRecord],
    entries: Sequence[JournalEntry],
    guarded: Sequence[tuple[JournalEntry | None, RunPatch]],
) -> tuple[set[str], set[str], set[str]]:
    """Write a group commit's batch in one statement.

    ``runs`` are inserted unless their id exists; ``entries`` upserted (never
    over a completed one) if their run exists; each patch of ``guarded``
    applied if its guard holds, and its entry written only then. The caller
    guarantees at most one patch per run and no two entries of one position
    among the guarded ones and the rest. Returns the ids of the runs
    created, of the runs patched, and of the runs missing for ``entries``
    (their entries were not written).
    """
    kept = _batch(entries)
    flags = [False] * len(kept)
    for entry, _ in guarded:
        if entry is not None:
            kept.append(entry)
            flags.append(True)
    # Sorted, so concurrent batches lock journal rows in one order.
    order = sorted(range(len(kept)), key=lambda i: (kept[i].run_id, kept[i].position))
    values = entry_values([kept[i] for i in order])
    if guarded:
        values["e_guarded"] = [flags[i] for i in order]
        patches = [patch for _, patch in guarded]
        for name in PATCH_FIELDS:
            values[f"p_{name}"] = [getattr(patch, name) for patch in patches]
        # unnest cannot yield an array per row: the statuses as one text each.
        values["p_expect"] = [",".join(patch.expect) for patch in patches]
        values.update(cx.notify)
    if runs:
        values.update(run_arrays(runs))
    st = cx.q.write_batch[bool(runs), bool(guarded), bool(kept)]
    row = await conn.fetchrow(st.sql, *st.args(values))
    assert row is not None  # one row, always
    created, patched, missing = set(row[0]), set(row[1]), set(row[3])
    known(cx, created | patched | ({entry.run_id for entry in kept} - missing))
    return created, patched, missing


def _batch(entries: Sequence[JournalEntry]) -> list[JournalEntry]:
    """One entry per (run, position), as if they were written one after another.

    One INSERT ... ON CONFLICT cannot touch a row twice, and a completed entry
    is final, so a later entry only replaces an earlier unfinished one.
    """
    kept: dict[tuple[str, int], JournalEntry] = {}
    for entry in entries:
        key = (entry.run_id, entry.position)
        old = kept.get(key)
        if old is None or old.status != "completed":
            kept[key] = entry
    return list(kept.values())


def patch_applied(run: RunRecord | None, patch: RunPatch) -> bool:
    """True when ``run`` already shows every effect of ``patch``.

    Used only after a lost connection, to tell whether the first attempt
    committed. Usage increments (``add_*``) cannot be told apart from earlier
    ones, so they count as applied when everything else, ``updated_at``
    included, matches.
    """
    if run is None or run.updated_at != patch.updated_at:
        return False
    for name in ("status", "output", "output_ref", "input", "metadata"):
        value = getattr(patch, name)
        if value is not None and getattr(run, name) != value:
            return False
    if patch.clear_error:
        if run.error is not None or run.error_info is not None:
            return False
    elif (patch.error is not None and run.error != patch.error) or (
        patch.error_info is not None and run.error_info != patch.error_info
    ):
        return False
    if patch.clear_wait and (run.wait, run.wake_at, run.wait_topics) != (
        patch.wait,
        patch.wake_at,
        patch.wait_topics,
    ):
        return False
    return not (patch.release and (run.owner is not None or run.lease_until is not None))


# -- reads ----------------------------------------------------------------------------


async def get_run(conn: Connection, cx: Context, run_id: str) -> RunRecord | None:
    """The run, or ``None``."""
    st = cx.q.sql["get_run"]
    row = await conn.fetchrow(st.sql, *st.args({"id": run_id}))
    if row is None:
        return None
    known(cx, (run_id,))
    return RunRecord(*row)


async def list_runs(
    conn: Connection,
    cx: Context,
    status: str | None,
    flow: str | None,
    limit: int,
    before: str | None,
) -> list[RunRecord]:
    """Runs matching the filters, newest first (older than run ``before``)."""
    st = cx.q.list_runs[(status is not None, flow is not None, before is not None)]
    values = {"status": status, "flow": flow, "before": before, "limit": limit}
    return [RunRecord(*row) for row in await conn.fetch(st.sql, *st.args(values))]


async def find_runs(conn: Connection, cx: Context, prefix: str, limit: int) -> list[str]:
    """Ids starting with ``prefix``: a range scan of the primary key."""
    if not prefix:
        st = cx.q.sql["find_all_runs"]
        rows = await conn.fetch(st.sql, *st.args({"limit": limit}))
    else:
        high = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        st = cx.q.sql["find_runs"]
        rows = await conn.fetch(st.sql, *st.args({"low": prefix, "high": high, "limit": limit}))
    return [row[0] for row in rows]


async def tree_usage(conn: Connection, cx: Context, run_id: str) -> tuple[int, float | None]:
    """Tokens and cost of the run and every run below it: a range scan of the primary key."""
    low, high = child_prefix_range(run_id)
    st = cx.q.sql["tree_usage"]
    rows = await conn.fetch(st.sql, *st.args({"id": run_id, "low": low, "high": high}))
    return sum_tree(run_id, (tuple(row) for row in rows))


async def journal_counts(conn: Connection, cx: Context, run_ids: list[str]) -> dict[str, int]:
    """Journal sizes of ``run_ids`` (runs without entries are absent)."""
    st = cx.q.sql["journal_counts"]
    return {row[0]: row[1] for row in await conn.fetch(st.sql, *st.args({"run_ids": run_ids}))}


async def load_journal(conn: Connection, cx: Context, run_id: str) -> list[JournalEntry]:
    """The run's journal ordered by position."""
    st = cx.q.sql["load_journal"]
    return [JournalEntry(*row) for row in await conn.fetch(st.sql, *st.args({"run_id": run_id}))]


async def orphans(
    conn: Connection, cx: Context, flows: Sequence[str], now: float, dead: Sequence[str], limit: int
) -> list[str]:
    """``running`` runs of ``flows`` that could be claimed now, oldest first."""
    if not flows:
        return []
    st = cx.q.sql["orphans"]
    values = {"flows": list(flows), "dead": list(dead), "now": now, "limit": limit}
    return [row[0] for row in await conn.fetch(st.sql, *st.args(values))]


async def due(
    conn: Connection, cx: Context, flows: Sequence[str], now: float, dead: Sequence[str], limit: int
) -> list[str]:
    """Suspended, unhosted runs of ``flows`` whose ``wake_at`` passed, most overdue first."""
    if not flows:
        return []
    st = cx.q.sql["due"]
    values = {"flows": list(flows), "dead": list(dead), "now": now, "limit": limit}
    return [row[0] for row in await conn.fetch(st.sql, *st.args(values))]


async def next_wake(
    conn: Connection, cx: Context, flows: Sequence[str], now: float
) -> float | None:
    """Earliest ``wake_at`` of a suspended run of ``flows`` nobody hosts."""
    if not flows:
        return None
    st = cx.q.sql["next_wake"]
    found = await conn.fetchval(st.sql, *st.args({"flows": list(flows), "now": now}))
    return None if found is None else float(found)


async def owners(conn: Connection, cx: Context) -> list[str]:
    """Distinct owners holding the lease of an active run."""
    st = cx.q.sql["owners"]
    return [row[0] for row in await conn.fetch(st.sql, *st.args({"active": ACTIVE}))]


async def next_message(conn: Connection, cx: Context, run_id: str, topic: str) -> Message | None:
    """Oldest unconsumed message of ``run_id`` on ``topic``."""
    st = cx.q.sql["next_message"]
    row = await conn.fetchrow(st.sql, *st.args({"run_id": run_id, "topic": topic}))
    return None if row is None else Message(*row)


async def messages_after(conn: Connection, cx: Context, after_id: int, limit: int) -> list[Message]:
    """Unconsumed messages with an id above ``after_id``, oldest first."""
    st = cx.q.sql["messages_after"]
    rows = await conn.fetch(st.sql, *st.args({"after": after_id, "limit": limit}))
    return [Message(*row) for row in rows]


# -- mutations ------------------------------------------------------------------------


async def create_run(
    conn: Connection,
    cx: Context,
    run: RunRecord,
    journal: Sequence[JournalEntry],
    uncertain: bool,
) -> tuple[RunRecord, bool]:
    """Insert ``run`` and ``journal`` unless its id exists; the stored record and whether new."""
    for entry in journal:
        if entry.run_id != run.id:
            raise StorageError(f"journal entry of run {entry.run_id} given to create run {run.id}")
    values = run_values(run)
    if journal:
        # The last entry given for a position wins, as in the other backends.
        entries = list({entry.position: entry for entry in journal}.values())
        values.update(entry_values(entries))
        st = cx.q.sql["create_run_with_journal"]
        created = bool(await conn.fetchval(st.sql, *st.args(values)))
    else:
        st = cx.q.sql["create_run"]
        created = await conn.fetchval(st.sql, *st.args(values)) is not None
    if created:
        known(cx, (run.id,))
        return run, True
    existing = await get_run(conn, cx, run.id)
    if existing is None:  # pragma: no cover - the insert just conflicted on this id
        raise StorageError(f"run {run.id} vanished while it was being created")
    # After a lost connection, finding exactly our record means our first try committed.
    return (run, True) if uncertain and existing == run else (existing, False)


async def record(
    conn: Connection,
    cx: Context,
    entries: Sequence[JournalEntry],
    patch: RunPatch | None,
    uncertain: bool,
) -> bool:
    """Upsert entries (never over a completed one) and apply ``patch``, or nothing."""
    if patch is None and len(entries) == 1:
        await _insert_entry(conn, cx, entries[0])  # a checkpoint: the hot path
        return True
    batch = _batch(entries)
    if patch is None:
        # Idempotent: running it twice leaves the same rows.
        if batch:
            await _write_entries(conn, cx, batch)
        return True
    if uncertain and await _recorded(conn, cx, batch, patch):
        return True
    others = [entry for entry in batch if entry.run_id != patch.run_id]
    if others:
        # Entries of another run than the patched one (no caller of kitaru's
        # does this): the statement writes them whenever the patch applies,
        # so check, as the other stores do, the guard first, then the runs.
        run = await get_run(conn, cx, patch.run_id)
        if run is None or run.status not in patch.expect:
            return False
        await _require_runs(conn, cx, others)
    values = {**patch_values(patch), **cx.notify}
    if len(batch) == 1:
        st = cx.q.sql["record_one"]
        row = await conn.fetchrow(st.sql, *st.args({**values, **_entry_value(batch[0])}))
    elif batch:
        values.update(entry_values(batch))
        st = cx.q.sql["record"]
        row = await conn.fetchrow(st.sql, *st.args(values))
    else:
        st = cx.q.sql["patch"]
        row = await conn.fetchrow(st.sql, *st.args(values))
    done = bool(row is not None and row[0])
    if not done and uncertain:
        return await _recorded(conn, cx, batch, patch)
    return done


async def update_run(
    conn: Connection, cx: Context, patch: RunPatch, uncertain: bool
) -> RunRecord | None:
    """Apply ``patch`` if the run's status matches; the updated record or ``None``."""
    if uncertain:
        run = await get_run(conn, cx, patch.run_id)
        if patch_applied(run, patch):
            return run
    st = cx.q.sql["update_run"]
    row = await conn.fetchrow(st.sql, *st.args({**patch_values(patch), **cx.notify}))
    if row is not None:
        return RunRecord(*tuple(row)[: len(RUN_COLUMNS)])
    if uncertain:
        run = await get_run(conn, cx, patch.run_id)
        return run if patch_applied(run, patch) else None
    return None


async def reset_journal(conn: Connection, cx: Context, patch: RunPatch, uncertain: bool) -> bool:
    """Delete the run's journal and apply ``patch``, if its status matches."""
    if uncertain and await _reset_done(conn, cx, patch):
        return True
    st = cx.q.sql["reset_journal"]
    row = await conn.fetchrow(st.sql, *st.args({**patch_values(patch), **cx.notify}))
    done = bool(row is not None and row[0])
    if not done and uncertain:
        return await _reset_done(conn, cx, patch)
    return done


async def consume(
    conn: Connection,
    cx: Context,
    message_id: int,
    entry: JournalEntry | None,
    patch: RunPatch | None,
    uncertain: bool,
) -> bool:
    """Mark the message consumed, record ``entry`` and apply ``patch``: all or nothing."""
    if uncertain and await _consumed(conn, cx, message_id, entry, patch):
        return True
    mark = cx.q.sql["mark_consumed"]
    try:
        async with conn.transaction():
            if await conn.fetchval(mark.sql, *mark.args({"id": message_id})) is None:
                raise _Refused
            if patch is not None:
                st = cx.q.sql["patch"]
                row = await conn.fetchrow(st.sql, *st.args({**patch_values(patch), **cx.notify}))
                if row is None or not row[0]:
                    raise _Refused
            if entry is not None:
                await _write_entries(conn, cx, [entry])
    except _Refused:
        return uncertain and await _consumed(conn, cx, message_id, entry, patch)
    return True


async def claim(
    conn: Connection,
    cx: Context,
    run_id: str,
    owner: str,
    now: float,
    lease_until: float,
    dead: Sequence[str],
) -> RunRecord | None:
    """Take the lease of an active run nobody live holds (idempotent for ``owner``)."""
    st = cx.q.sql["claim"]
    values = {
        "id": run_id,
        "owner": owner,
        "lease_until": lease_until,
        "active": ACTIVE,
        "dead": list(dead),
        "now": now,
    }
    row = await conn.fetchrow(st.sql, *st.args(values))
    if row is None:
        return None
    known(cx, (run_id,))
    return RunRecord(*row)


async def claim_due(
    conn: Connection,
    cx: Context,
    flows: Sequence[str],
    owner: str,
    now: float,
    lease_until: float,
    dead: Sequence[str],
    limit: int,
    uncertain: bool,
) -> list[RunRecord]:
    """Claim up to ``limit`` due, unhosted suspended runs of ``flows``, most overdue first."""
    runs = await _claim_many(
        conn, cx, "claim_due", flows, owner, now, lease_until, dead, limit, uncertain
    )
    runs.sort(key=lambda r: (r.wake_at or 0.0, r.id))
    return runs


async def announce(conn: Connection, cx: Context) -> None:
    """NOTIFY the other stores that a run waits for any worker."""
    await conn.execute(
        "SELECT pg_notify($1::text, $2::text)", cx.notify["channel"], cx.notify["runnable_payload"]
    )


async def claim_orphans(
    conn: Connection,
    cx: Context,
    flows: Sequence[str],
    owner: str,
    now: float,
    lease_until: float,
    dead: Sequence[str],
    limit: int,
    uncertain: bool,
) -> list[RunRecord]:
    """Claim up to ``limit`` running runs of ``flows`` that nobody live hosts, oldest first."""
    runs = await _claim_many(
        conn, cx, "claim_orphans", flows, owner, now, lease_until, dead, limit, uncertain
    )
    runs.sort(key=lambda r: (r.created_at, r.id))
    return runs


async def _claim_many(
    conn: Connection,
    cx: Context,
    statement: str,
    flows: Sequence[str],
    owner: str,
    now: float,
    lease_until: float,
    dead: Sequence[str],
    limit: int,
    uncertain: bool,
) -> list[RunRecord]:
    # "uncertain" (a retry after a lost connection) also returns what is
    # already leased to ``owner``: the first attempt may have claimed it.
    if not flows:
        return []
    st = cx.q.sql[statement]
    values = {
        "flows": list(flows),
        "dead": list(dead),
        "now": now,
        "own": uncertain,
        "owner": owner,
        "limit": limit,
        "lease_until": lease_until,
    }
    runs = [RunRecord(*row) for row in await conn.fetch(st.sql, *st.args(values))]
    known(cx, (run.id for run in runs))
    return runs


async def renew_leases(conn: Connection, cx: Context, owner: str, lease_until: float) -> int:
    """Extend every lease of ``owner``; how many."""
    st = cx.q.sql["renew_leases"]
    status = await conn.execute(st.sql, *st.args({"owner": owner, "lease_until": lease_until}))
    return int(status.rpartition(" ")[2] or 0)


async def release(conn: Connection, cx: Context, owner: str, run_ids: Sequence[str] | None) -> None:
    """Drop ``owner``'s leases, on all its runs or on ``run_ids``."""
    if run_ids is not None and not run_ids:
        return
    st = cx.q.sql["release"]
    values = {
        "owner": owner,
        "all": run_ids is None,
        "ids": list(run_ids or ()),
        **cx.notify,
    }
    await conn.fetchrow(st.sql, *st.args(values))


async def post(conn: Connection, cx: Context, message: Message, nonce: str) -> tuple[Message, bool]:
    """Store ``message`` with the next id, unless its key was seen for the run.

    ``nonce`` is unique to this ``post()`` call, so a retry after a lost
    connection finds the message its first attempt stored instead of adding
    a second one.
    """
    st = cx.q.sql["post"]
    values = {
        "lock_class": cx.post_lock[0],
        "lock_key": cx.post_lock[1],
        "run_id": message.run_id,
        "topic": message.topic,
        "payload": message.payload,
        "created_at": message.created_at,
        "sender": message.sender,
        "key": message.key,
        "nonce": nonce,
        **cx.notify,
    }
    row = await conn.fetchrow(st.sql, *st.args(values))
    if row is not None and row[0] is not None:
        return dataclasses.replace(message, id=int(row[0])), True
    mine = cx.q.sql["message_by_nonce"]
    found = await conn.fetchrow(mine.sql, *mine.args({"nonce": nonce}))
    if found is not None:
        return Message(*found), True
    if message.key is not None:
        by_key = cx.q.sql["message_by_key"]
        found = await conn.fetchrow(
            by_key.sql, *by_key.args({"run_id": message.run_id, "key": message.key})
        )
        if found is not None:
            return Message(*found), False
    raise StorageError(  # pragma: no cover - only the key or the nonce can conflict
        f"message to run {message.run_id} conflicted with a stored one that cannot be found"
    )


# -- helpers --------------------------------------------------------------------------


async def _insert_entry(conn: Connection, cx: Context, entry: JournalEntry) -> None:
    """Upsert one entry of an existing run, outside a transaction; an unknown run raises.

    Most entries are new, and a plain INSERT costs the server less than an
    upsert; one that exists already (a retried checkpoint, a repeated call)
    fails on the journal's key and goes the upsert's way. The run's
    existence is probed only for a run this store has not seen.
    """
    fields = _entry_fields(entry)
    seen = entry.run_id in cx.runs_seen
    try:
        status = await conn.execute(
            cx.q.sql["insert_seen" if seen else "insert_entry"].sql, *fields
        )
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
        if await conn.fetchval(cx.q.sql["upsert_entry"].sql, *fields):
            raise _unknown_run(entry.run_id) from None
        return
    if status.endswith(" 0"):  # "INSERT 0 0": the run's row was not found
        raise _unknown_run(entry.run_id)
    if not seen:
        known(cx, (entry.run_id,))


_UNIQUE_VIOLATION = "23505"


async def _write_entries(conn: Connection, cx: Context, entries: Sequence[JournalEntry]) -> None:
    """Upsert entries of existing runs, all or nothing; unknown runs raise."""
    if len(entries) == 1:
        # The statement's parameters are the entry's fields in order (checked
        # when it is compiled): no dict of names on the hot path.
        st = cx.q.sql["upsert_entry"]
        if await conn.fetchval(st.sql, *_entry_fields(entries[0])):
            raise _unknown_run(entries[0].run_id)
        return
    st = cx.q.sql["upsert_entries"]
    missing = await conn.fetchval(st.sql, *st.args(entry_values(entries)))
    if missing:
        raise _unknown_run(min(missing))


async def _require_runs(conn: Connection, cx: Context, entries: Sequence[JournalEntry]) -> None:
    """Raise for an entry whose run does not exist (runs are never deleted)."""
    ids = list(dict.fromkeys(entry.run_id for entry in entries))
    rows = await conn.fetch(cx.q.sql["existing_runs"].sql, ids)
    missing = set(ids) - {row[0] for row in rows}
    if missing:
        raise _unknown_run(min(missing))


def _unknown_run(run_id: str) -> StorageError:
    return StorageError(f"cannot record a journal entry for unknown run {run_id}")


async def _entries_present(conn: Connection, cx: Context, entries: Sequence[JournalEntry]) -> bool:
    by_run: dict[str, dict[int, JournalEntry]] = {}
    for entry in entries:
        if entry.run_id not in by_run:
            journal = await load_journal(conn, cx, entry.run_id)
            by_run[entry.run_id] = {e.position: e for e in journal}
        stored = by_run[entry.run_id].get(entry.position)
        if stored is None or (stored != entry and stored.status != "completed"):
            return False
    return True


async def _recorded(
    conn: Connection, cx: Context, entries: Sequence[JournalEntry], patch: RunPatch
) -> bool:
    run = await get_run(conn, cx, patch.run_id)
    return patch_applied(run, patch) and await _entries_present(conn, cx, entries)


async def _reset_done(conn: Connection, cx: Context, patch: RunPatch) -> bool:
    run = await get_run(conn, cx, patch.run_id)
    return patch_applied(run, patch) and not await load_journal(conn, cx, patch.run_id)


async def _consumed(
    conn: Connection,
    cx: Context,
    message_id: int,
    entry: JournalEntry | None,
    patch: RunPatch | None,
) -> bool:
    st = cx.q.sql["message_consumed"]
    if not await conn.fetchval(st.sql, *st.args({"id": message_id})):
        return False
    if patch is not None and not patch_applied(await get_run(conn, cx, patch.run_id), patch):
        return False
    return entry is None or await _entries_present(conn, cx, [entry])
