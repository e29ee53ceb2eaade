"""The PostgreSQL run store's writes of runs and journals, safe to run again.

Each mirrors the method of the same name in :mod:`kitaru.storage.memory`.
Every one is a single statement (its own transaction, one round trip),
except :func:`consume`, which needs three; :func:`write_batch` is the group
commit's (:mod:`kitaru.storage.postgres._batch`).

They take ``uncertain``: ``True`` when an earlier attempt of the same call
lost its connection after sending its statement, so it may have committed.
Writes whose result would differ on a second run (a guarded patch refusing
because the first attempt already changed the status, ...) then look for the
first attempt's effects before and, if refused, after running again; see the
"Connection faults" section of :mod:`kitaru.storage.postgres`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kitaru._errors import StorageError

from ..base import JournalEntry, RunPatch, RunRecord
from ._ops import Context, get_run, known, load_journal
from ._sql import ENTRY_COLUMNS, PATCH_FIELDS, RUN_COLUMNS

if TYPE_CHECKING:
    from ._ops import Connection

__all__ = (
    "consume",
    "create_run",
    "patch_applied",
    "record",
    "reset_journal",
    "update_run",
    "write_batch",
)


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
