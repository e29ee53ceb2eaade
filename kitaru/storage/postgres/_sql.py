"""The SQL of the PostgreSQL run store, compiled once per schema.

Templates name their placeholders (``$run_id``) and the schema (``{s}``);
:class:`Queries` turns them into numbered placeholders (``$1``) for one
schema, so each statement's text is constant and asyncpg's per-connection
statement cache prepares it once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ..base import ACTIVE_STATUSES, JournalEntry, Message, RunRecord, Unhosted
from ._url import quote_ident

__all__ = ("PATCH_FIELDS", "Queries", "Statement", "queries")

RUN_COLUMNS = tuple(f.name for f in dataclasses.fields(RunRecord))
ENTRY_COLUMNS = tuple(f.name for f in dataclasses.fields(JournalEntry))
MESSAGE_COLUMNS = tuple(f.name for f in dataclasses.fields(Message))
ACTIVE = list(ACTIVE_STATUSES)

#: RunPatch fields the UPDATE below understands; a test fails when RunPatch grows.
PATCH_FIELDS = (
    "run_id",
    "updated_at",
    "status",
    "output",
    "output_ref",
    "clear_error",
    "error",
    "error_info",
    "metadata",
    "add_input_tokens",
    "add_output_tokens",
    "add_cost_usd",
    "input",
    "clear_wait",
    "wait",
    "wake_at",
    "wait_topics",
    "release",
    "expect",
)

_SQL_TYPES = {"str": "text", "int": "int8", "float": "float8", "bytes": "bytea"}


def _sql_types(record: type) -> dict[str, str]:
    """Column -> SQL type of a record dataclass, from its annotations."""
    types = {}
    for f in dataclasses.fields(record):
        base = str(f.type).split("|")[0].strip()
        types[f.name] = _SQL_TYPES[base]
    return types


_RUN_TYPES = _sql_types(RunRecord)
_ENTRY_TYPES = _sql_types(JournalEntry)


_PATCH_ASSIGN = """
    updated_at = $p_updated_at::float8,
    status = COALESCE($p_status::text, status),
    output = COALESCE($p_output::bytea, output),
    output_ref = COALESCE($p_output_ref::text, output_ref),
    error = CASE WHEN $p_clear_error::bool THEN NULL ELSE COALESCE($p_error::text, error) END,
    error_info = CASE WHEN $p_clear_error::bool THEN NULL
                      ELSE COALESCE($p_error_info::bytea, error_info) END,
    metadata = COALESCE($p_metadata::bytea, metadata),
    input_tokens = input_tokens + $p_add_input_tokens::int8,
    output_tokens = output_tokens + $p_add_output_tokens::int8,
    cost_usd = CASE WHEN $p_add_cost_usd::float8 IS NULL THEN cost_usd
                    ELSE COALESCE(cost_usd, 0) + $p_add_cost_usd::float8 END,
    input = COALESCE($p_input::bytea, input),
    wait = CASE WHEN $p_clear_wait::bool THEN $p_wait::bytea ELSE wait END,
    wake_at = CASE WHEN $p_clear_wait::bool THEN $p_wake_at::float8 ELSE wake_at END,
    wait_topics = CASE WHEN $p_clear_wait::bool THEN $p_wait_topics::text ELSE wait_topics END,
    owner = CASE WHEN $p_release::bool THEN NULL ELSE owner END,
    lease_until = CASE WHEN $p_release::bool THEN NULL ELSE lease_until END
"""
_PATCH_SET = _PATCH_ASSIGN + "WHERE id = $p_run_id::text AND status = ANY($p_expect::text[])\n"
# The patched run row, then a NOTIFY when the patch left a suspended run with a
# deadline that nobody hosts: the timer services of other processes should look.
_PATCH = f"p AS (UPDATE {{s}}.runs SET {_PATCH_SET} RETURNING {{run_cols}})"
# The same, starting the run's next generation (continue_as_new).
_PATCH_RESET = (
    f"p AS (UPDATE {{s}}.runs SET generation = generation + 1, {_PATCH_SET} RETURNING {{run_cols}})"
)
_NOTIFY_DUE = (
    "n AS (SELECT pg_notify($channel::text, $due_payload::text) FROM p "
    "WHERE p.owner IS NULL AND p.wake_at IS NOT NULL AND p.status IN ('waiting', 'sleeping'))"
)
_ENTRIES = "unnest({arrays}) AS u ({entry_cols})"
_UPSERT_ENTRIES = (
    "INSERT INTO {s}.journal AS j ({entry_cols}) SELECT * FROM {source} "
    "ON CONFLICT (run_id, position) DO UPDATE SET {entry_set} WHERE j.status <> 'completed'"
)
# Group commit (kitaru.storage.postgres._batch): one statement writes a whole
# batch. New runs, then the patches (unnest'ed; ``expect`` as comma-joined
# text, since unnest cannot yield one array per row), then the journal
# entries: a plain call's always, a guarded call's only if its patch applied.
# The batcher sends at most one patch per run and one entry per position, so
# no row is touched twice. A patch does not see a run inserted by the same
# statement: it acts as if it came first, an order its concurrent callers
# could have had.
_PATCH_TYPES = {name: cast for name, cast in re.findall(r"\$p_(\w+)::(\w+)", _PATCH_SET)}
_BATCH_ASSIGN = re.sub(r"\$(p_\w+)::\w+", r"u.\1", _PATCH_ASSIGN)
_BATCH_PATCHES = (
    "unnest("
    + ", ".join(f"$p_{name}::{_PATCH_TYPES[name]}[]" for name in _PATCH_TYPES)
    + ") AS u ("
    + ", ".join(f"p_{name}" for name in _PATCH_TYPES)
    + ")"
)
_CLAIMABLE = "(owner IS NULL OR owner = ANY($dead::text[]) OR lease_until < $now::float8)"

# What makes a run due, or an orphan, besides nobody live hosting it; and
# the order workers take them in (most overdue first, oldest first).
_UNHOSTED: dict[Unhosted, tuple[str, str]] = {
    "due": (
        "wake_at IS NOT NULL AND wake_at <= $now::float8 AND status IN ('waiting', 'sleeping')",
        "wake_at, id",
    ),
    "orphans": ("status = 'running'", "created_at, id"),
}


def _unhosted_templates(kind: Unhosted) -> dict[str, str]:
    """The statements that list (``kind``) and claim (``claim_{kind}``) such runs."""
    pick, order = _UNHOSTED[kind]
    pick = f"{pick} AND flow = ANY($flows::text[])"
    return {
        # FOR UPDATE SKIP LOCKED: rows another worker is claiming are skipped.
        kind: (
            f"SELECT id FROM {{s}}.runs WHERE {pick} AND {_CLAIMABLE} "
            f"ORDER BY {order} LIMIT $limit::int8 FOR UPDATE SKIP LOCKED"
        ),
        # One statement: pick the runs (skipping rows another worker is
        # claiming right now) and take their leases. After a lost connection
        # the retry also takes back runs its first attempt may have claimed
        # (owner = $owner).
        f"claim_{kind}": (
            f"WITH c AS (SELECT id FROM {{s}}.runs WHERE {pick} "
            "AND (owner IS NULL OR owner = ANY($dead::text[]) OR lease_until < $now::float8 "
            "OR ($own::bool AND owner = $owner::text)) "
            f"ORDER BY {order} LIMIT $limit::int8 FOR UPDATE SKIP LOCKED) "
            "UPDATE {s}.runs AS r SET owner = $owner::text, lease_until = $lease_until::float8 "
            "FROM c WHERE r.id = c.id RETURNING {r_run_cols}"
        ),
    }


_TEMPLATES: dict[str, str] = {
    **_unhosted_templates("due"),
    **_unhosted_templates("orphans"),
    "get_run": "SELECT {run_cols} FROM {s}.runs WHERE id = $id::text",
    "find_runs": (
        "SELECT id FROM {s}.runs WHERE id >= $low::text AND id < $high::text "
        "ORDER BY id LIMIT $limit::int8"
    ),
    "find_all_runs": "SELECT id FROM {s}.runs ORDER BY id LIMIT $limit::int8",
    "tree_usage": (
        "SELECT id, parent_id, input_tokens + output_tokens, cost_usd FROM {s}.runs "
        "WHERE id = $id::text OR (id >= $low::text AND id < $high::text)"
    ),
    "existing_runs": "SELECT id FROM {s}.runs WHERE id = ANY($ids::text[])",
    "journal_counts": (
        "SELECT run_id, COUNT(*) FROM {s}.journal WHERE run_id = ANY($run_ids::text[]) "
        "GROUP BY run_id"
    ),
    "load_journal": (
        "SELECT {entry_cols} FROM {s}.journal WHERE run_id = $run_id::text ORDER BY position"
    ),
    "next_wake": (
        "SELECT min(wake_at) FROM {s}.runs WHERE wake_at IS NOT NULL "
        "AND status IN ('waiting', 'sleeping') AND flow = ANY($flows::text[]) "
        "AND (owner IS NULL OR lease_until < $now::float8)"
    ),
    "owners": (
        "SELECT DISTINCT owner FROM {s}.runs WHERE owner IS NOT NULL "
        "AND status = ANY($active::text[]) ORDER BY owner"
    ),
    "next_message": (
        "SELECT {message_cols} FROM {s}.messages WHERE run_id = $run_id::text "
        "AND topic = $topic::text AND NOT consumed ORDER BY id LIMIT 1"
    ),
    "message_with_key": (
        "SELECT {message_cols} FROM {s}.messages WHERE run_id = $run_id::text AND key = $key::text"
    ),
    "messages_after": (
        "SELECT {message_cols} FROM {s}.messages WHERE id > $after::int8 AND NOT consumed "
        "ORDER BY id LIMIT $limit::int8"
    ),
    "message_by_nonce": "SELECT {message_cols} FROM {s}.messages WHERE nonce = $nonce::text",
    "message_by_key": (
        "SELECT {message_cols} FROM {s}.messages WHERE run_id = $run_id::text AND key = $key::text"
    ),
    "message_consumed": "SELECT consumed FROM {s}.messages WHERE id = $id::int8",
    "create_run": (
        "INSERT INTO {s}.runs ({run_cols}) VALUES ({run_values}) ON CONFLICT (id) DO NOTHING "
        "RETURNING id"
    ),
    "create_run_with_journal": (
        "WITH r AS (INSERT INTO {s}.runs ({run_cols}) VALUES ({run_values}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id), "
        "e AS (INSERT INTO {s}.journal AS j ({entry_cols}) "
        "SELECT * FROM {entries} WHERE EXISTS (SELECT 1 FROM r) "
        "ON CONFLICT (run_id, position) DO UPDATE SET {entry_set} WHERE j.status <> 'completed') "
        "SELECT EXISTS (SELECT 1 FROM r)"
    ),
    # Entries without a patch: written only if every run they belong to
    # exists (the journal has no foreign key: an index probe here is cheaper
    # than the key's row lock), all or nothing; returns the missing run ids.
    "upsert_entries": (
        "WITH m AS (SELECT DISTINCT v.id FROM unnest($e_run_id::text[]) AS v (id) "
        "WHERE NOT EXISTS (SELECT 1 FROM {s}.runs AS r WHERE r.id = v.id)), "
        "e AS ("
        + _UPSERT_ENTRIES.replace("{source}", "{entries} WHERE NOT EXISTS (SELECT 1 FROM m)")
        + ") SELECT ARRAY(SELECT id FROM m)"
    ),
    # One entry, first try: a plain INSERT, which PostgreSQL runs faster
    # than an upsert or a CTE (no speculative insertion). "INSERT 0 0" means
    # the run is missing; a unique violation, that the entry exists (then
    # upsert_entry decides). Only outside a transaction: a violation would
    # abort it.
    "insert_entry": (
        "INSERT INTO {s}.journal ({entry_cols}) SELECT {entry_values} "
        "WHERE EXISTS (SELECT 1 FROM {s}.runs WHERE id = $e_run_id::text)"
    ),
    # The same, for a run the store has seen exist (runs are never deleted).
    "insert_seen": "INSERT INTO {s}.journal ({entry_cols}) VALUES ({entry_values})",
    # One entry: returns whether its run is missing (then nothing was written).
    "upsert_entry": (
        "WITH m AS (SELECT 1 WHERE NOT EXISTS "
        "(SELECT 1 FROM {s}.runs WHERE id = $e_run_id::text)), "
        "e AS (INSERT INTO {s}.journal AS j ({entry_cols}) SELECT {entry_values} "
        "WHERE NOT EXISTS (SELECT 1 FROM m) "
        "ON CONFLICT (run_id, position) DO UPDATE SET {entry_set} WHERE j.status <> 'completed') "
        "SELECT EXISTS (SELECT 1 FROM m)"
    ),
    "record": (
        f"WITH {_PATCH}, {_NOTIFY_DUE}, "
        "e AS (INSERT INTO {s}.journal AS j ({entry_cols}) "
        "SELECT * FROM {entries} WHERE EXISTS (SELECT 1 FROM p) "
        "ON CONFLICT (run_id, position) DO UPDATE SET {entry_set} WHERE j.status <> 'completed') "
        "SELECT EXISTS (SELECT 1 FROM p), (SELECT count(*) FROM n)"
    ),
    # ``record`` with one entry (a checkpoint): scalar placeholders instead of
    # unnest over twelve arrays, and only the columns the NOTIFY test needs.
    "record_one": (
        "WITH p AS (UPDATE {s}.runs SET " + _PATCH_SET + " RETURNING owner, wake_at, status), "
        f"{_NOTIFY_DUE}, "
        "e AS (INSERT INTO {s}.journal AS j ({entry_cols}) "
        "SELECT {entry_values} WHERE EXISTS (SELECT 1 FROM p) "
        "ON CONFLICT (run_id, position) DO UPDATE SET {entry_set} WHERE j.status <> 'completed') "
        "SELECT EXISTS (SELECT 1 FROM p), (SELECT count(*) FROM n)"
    ),
    "update_run": (
        f"WITH {_PATCH}, {_NOTIFY_DUE} SELECT {{p_run_cols}}, (SELECT count(*) FROM n) FROM p"
    ),
    "reset_journal": (
        f"WITH {_PATCH_RESET}, {_NOTIFY_DUE}, "
        "d AS (DELETE FROM {s}.journal WHERE run_id IN (SELECT id FROM p)) "
        "SELECT EXISTS (SELECT 1 FROM p), (SELECT count(*) FROM n)"
    ),
    "patch": (
        f"WITH {_PATCH}, {_NOTIFY_DUE} SELECT EXISTS (SELECT 1 FROM p), (SELECT count(*) FROM n)"
    ),
    "mark_consumed": (
        "UPDATE {s}.messages SET consumed = true WHERE id = $id::int8 AND NOT consumed "
        "RETURNING run_id"
    ),
    "claim": (
        "UPDATE {s}.runs SET owner = $owner::text, lease_until = $lease_until::float8 "
        "WHERE id = $id::text AND status = ANY($active::text[]) "
        "AND (owner IS NULL OR owner = $owner::text OR owner = ANY($dead::text[]) "
        "OR lease_until < $now::float8) RETURNING {run_cols}"
    ),
    "renew_leases": (
        "UPDATE {s}.runs SET lease_until = $lease_until::float8 WHERE owner = $owner::text"
    ),
    # Releasing suspended runs with deadlines hands those deadlines to the
    # other processes' timer services: tell them.
    "release": (
        "WITH u AS (UPDATE {s}.runs SET owner = NULL, lease_until = NULL "
        "WHERE owner = $owner::text AND ($all::bool OR id = ANY($ids::text[])) "
        "RETURNING status, wake_at), "
        "n AS (SELECT pg_notify($channel::text, $due_payload::text) FROM u "
        "WHERE u.wake_at IS NOT NULL AND u.status IN ('waiting', 'sleeping') LIMIT 1) "
        "SELECT count(*), (SELECT count(*) FROM n) FROM u"
    ),
    # The advisory lock (held until commit) serialises id assignment with the
    # commit, so ids become visible in order; nextval runs after the lock.
    "post": (
        "WITH l AS (SELECT pg_advisory_xact_lock($lock_class::int4, $lock_key::int4)), "
        "ins AS (INSERT INTO {s}.messages (id, run_id, topic, payload, created_at, sender, key, "
        "nonce) SELECT nextval({sequence}::regclass), $run_id::text, $topic::text, "
        "$payload::bytea, $created_at::float8, $sender::text, $key::text, $nonce::text FROM l "
        "ON CONFLICT DO NOTHING RETURNING id), "
        "n AS (SELECT pg_notify($channel::text, $message_payload::text) FROM ins) "
        "SELECT (SELECT id FROM ins), (SELECT count(*) FROM n)"
    ),
}
_PARAM = re.compile(r"\$([a-z_]+)")


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """SQL with ``$1..$n`` placeholders and the names that fill them, in order."""

    sql: str
    names: tuple[str, ...]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``values`` (keyed by placeholder name)."""
        return [values[name] for name in self.names]


def _compile(template: str) -> Statement:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Statement(_PARAM.sub(number, template), tuple(names))


class Queries:
    """Every statement of the store, compiled once for one schema."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        sequence = "'" + f"{s}.message_ids".replace("'", "''") + "'"
        arrays = ", ".join(f"$e_{c}::{t}[]" for c, t in _ENTRY_TYPES.items())
        run_arrays = ", ".join(f"$r_{c}::{t}[]" for c, t in _RUN_TYPES.items())
        parts = {
            "s": s,
            "sequence": sequence,
            "run_cols": ", ".join(RUN_COLUMNS),
            "r_run_cols": ", ".join(f"r.{c}" for c in RUN_COLUMNS),
            "p_run_cols": ", ".join(f"p.{c}" for c in RUN_COLUMNS),
            "run_values": ", ".join(f"$r_{c}::{_RUN_TYPES[c]}" for c in RUN_COLUMNS),
            "entry_cols": ", ".join(ENTRY_COLUMNS),
            "entry_set": ", ".join(f"{c} = excluded.{c}" for c in ENTRY_COLUMNS[2:]),
            "entry_values": ", ".join(f"$e_{c}::{t}" for c, t in _ENTRY_TYPES.items()),
            "entries": _ENTRIES.format(arrays=arrays, entry_cols=", ".join(ENTRY_COLUMNS)),
            "runs": f"unnest({run_arrays}) AS v ({', '.join(RUN_COLUMNS)})",
            "plain_entries": _ENTRIES.format(
                arrays=arrays, entry_cols=", ".join(ENTRY_COLUMNS)
            ).replace("AS u", "AS x"),
            "guarded_entries": (
                f"unnest({arrays}, $e_guarded::bool[]) AS x ({', '.join(ENTRY_COLUMNS)}, guarded)"
            ),
            "message_cols": ", ".join(MESSAGE_COLUMNS),
        }
        self.sql = {name: _compile(t.format(**parts)) for name, t in _TEMPLATES.items()}
        # _ops passes an entry's fields positionally to these.
        for name in ("insert_entry", "insert_seen", "upsert_entry"):
            assert self.sql[name].names == tuple(f"e_{c}" for c in ENTRY_COLUMNS)
        flags = (False, True)
        #: ``write_batch[(runs, patches, entries)]``: a batch with those parts.
        #: Returns the ids of the runs created, of the runs patched, the
        #: NOTIFYs sent and the ids of the runs missing for plain entries
        #: (those entries were not written; the others were).
        self.write_batch = {
            (a, b, c): _compile(_write_batch_template(a, b, c).format(**parts))
            for a in flags
            for b in flags
            for c in flags
            if a or b or c
        }
        self.list_runs = {
            (a, b, c): _compile(_list_runs_template(a, b, c).format(**parts))
            for a in flags
            for b in flags
            for c in flags
        }


@lru_cache(maxsize=64)
def queries(schema: str) -> Queries:
    """The compiled statements for ``schema`` (shared by every store on it)."""
    return Queries(schema)


def _list_runs_template(status: bool, flow: bool, before: bool) -> str:
    # One statement per filter combination: each can use an index, which a
    # generic "($1 IS NULL OR status = $1)" plan could not.
    where = []
    if before:
        # Row values compare lexicographically: older, or as old with a smaller id.
        where.append(
            "(created_at, id) < (SELECT created_at, id FROM {s}.runs WHERE id = $before::text)"
        )
    if status:
        where.append("status = $status::text")
    if flow:
        where.append("flow = $flow::text")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return (
        "SELECT {run_cols} FROM {s}.runs"
        + clause
        + (" ORDER BY created_at DESC, id DESC LIMIT $limit::int8")
    )


def _write_batch_template(runs: bool, patches: bool, entries: bool) -> str:
    # Only the parts a batch has: every array parameter costs the client
    # time to encode even when empty.
    ctes = []
    if runs:
        ctes.append(
            "r AS (INSERT INTO {s}.runs ({run_cols}) SELECT * FROM {runs} "
            "ON CONFLICT (id) DO NOTHING RETURNING id)"
        )
    if patches:
        ctes.append(
            "p AS (UPDATE {s}.runs SET " + _BATCH_ASSIGN + " FROM " + _BATCH_PATCHES + " "
            "WHERE id = u.p_run_id AND status = ANY(string_to_array(u.p_expect, ',')) "
            "RETURNING id, owner, wake_at, status)"
        )
        ctes.append(_NOTIFY_DUE)
    missing = "'{{}}'::text[]"
    if entries:
        # Each entry once, with whether its run exists. A plain entry needs
        # its run (the batcher sends plain calls of one run each, so this is
        # all or nothing per call); a guarded one, its patch.
        source = "{guarded_entries}" if patches else "{plain_entries}"
        ctes.append(
            "es AS (SELECT x.*, EXISTS (SELECT 1 FROM {s}.runs AS k WHERE k.id = x.run_id) "
            f"AS known FROM {source})"
        )
        where = "known"
        if patches:
            where = "CASE WHEN guarded THEN run_id IN (SELECT id FROM p) ELSE known END"
        ctes.append(
            "e AS (INSERT INTO {s}.journal AS j ({entry_cols}) SELECT {entry_cols} FROM es "
            f"WHERE {where} ON CONFLICT (run_id, position) DO UPDATE SET {{entry_set}} "
            "WHERE j.status <> 'completed')"
        )
        guard = " AND NOT guarded" if patches else ""
        missing = f"ARRAY(SELECT DISTINCT run_id FROM es WHERE NOT known{guard})"
    return (
        "WITH "
        + ", ".join(ctes)
        + " SELECT "
        + ("ARRAY(SELECT id FROM r)" if runs else "'{{}}'::text[]")
        + ", "
        + ("ARRAY(SELECT id FROM p), (SELECT count(*) FROM n)" if patches else "'{{}}'::text[], 0")
        + ", "
        + missing
    )
