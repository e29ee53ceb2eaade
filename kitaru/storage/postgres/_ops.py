"""The PostgreSQL run store's reads, claims and messages, as plain functions of a connection.

Each function mirrors the method of the same name in
:mod:`kitaru.storage.memory`; each is one statement (its own transaction,
one round trip). The writes of runs and journal entries, which must tell
after a lost connection whether they committed, are in
:mod:`kitaru.storage.postgres._writes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kitaru._errors import StorageError

from ..base import (
    JournalEntry,
    Message,
    RunRecord,
    Unhosted,
    child_prefix_range,
    sum_tree,
)
from ._sql import ACTIVE, Queries, queries
from ._url import lock_key

if TYPE_CHECKING:
    from asyncpg import Connection as _Connection
    from asyncpg.pool import PoolConnectionProxy

    #: A connection of its own (migrations, the listener) or one lent by the pool.
    Connection = _Connection[Any] | PoolConnectionProxy[Any]

__all__ = ("Context", "known")


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

    @classmethod
    def of(cls, schema: str, channel: str, origin: str) -> Context:
        """The context of a store on ``schema`` whose NOTIFYs say they come from ``origin``."""
        return cls(
            q=queries(schema),
            notify={
                "channel": channel,
                "due_payload": f"d:{origin}",
                "message_payload": f"m:{origin}",
                "runnable_payload": f"r:{origin}",
            },
            post_lock=lock_key(schema, "post"),
        )


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


async def unhosted(
    conn: Connection,
    cx: Context,
    kind: Unhosted,
    flows: Sequence[str],
    now: float,
    dead: Sequence[str],
    limit: int,
) -> list[str]:
    """Runs of ``flows`` nobody live hosts: due suspended ones, or orphaned running ones.

    Due runs come most overdue first, orphans oldest first.
    """
    if not flows:
        return []
    st = cx.q.sql[kind]
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


async def message_with_key(conn: Connection, cx: Context, run_id: str, key: str) -> Message | None:
    """The message ``run_id`` accepted with idempotency ``key``, consumed or not."""
    st = cx.q.sql["message_with_key"]
    row = await conn.fetchrow(st.sql, *st.args({"run_id": run_id, "key": key}))
    return None if row is None else Message(*row)


async def messages_after(conn: Connection, cx: Context, after_id: int, limit: int) -> list[Message]:
    """Unconsumed messages with an id above ``after_id``, oldest first."""
    st = cx.q.sql["messages_after"]
    rows = await conn.fetch(st.sql, *st.args({"after": after_id, "limit": limit}))
    return [Message(*row) for row in rows]


# -- claims, leases and messages ----------------------------------------------------


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


async def claim_unhosted(
    conn: Connection,
    cx: Context,
    kind: Unhosted,
    flows: Sequence[str],
    owner: str,
    now: float,
    lease_until: float,
    dead: Sequence[str],
    limit: int,
    uncertain: bool,
) -> list[RunRecord]:
    """Lease to ``owner`` up to ``limit`` of the runs :func:`unhosted` lists, in its order."""
    # "uncertain" (a retry after a lost connection) also returns what is
    # already leased to ``owner``: the first attempt may have claimed it.
    if not flows:
        return []
    st = cx.q.sql[f"claim_{kind}"]
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
    # UPDATE ... RETURNING keeps no order: sort as the selection did.
    if kind == "due":
        runs.sort(key=lambda r: (r.wake_at or 0.0, r.id))
    else:
        runs.sort(key=lambda r: (r.created_at, r.id))
    return runs


async def announce(conn: Connection, cx: Context) -> None:
    """NOTIFY the other stores that a run waits for any worker."""
    await conn.execute(
        "SELECT pg_notify($1::text, $2::text)", cx.notify["channel"], cx.notify["runnable_payload"]
    )


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
