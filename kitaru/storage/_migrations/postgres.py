"""PostgreSQL schema: the ordered migrations and the function that applies them.

All of kitaru's tables live in one schema (``?schema=`` in the store URL,
``kitaru`` by default), created by the first migration run. The version is the
single row of ``kitaru_version`` in that schema; DDL is transactional in
PostgreSQL, so a migration and its version bump commit together.

Several workers may open a new database at the same moment: each first reads
the version without locking (the usual case, an up-to-date schema, costs one
query and no DDL), and only if something is missing takes a session-level
advisory lock, re-reads the version inside a fresh transaction and applies what
is still missing. The lock is taken outside the transaction on purpose: a
transaction begun after the wait sees the catalog as the previous holder left
it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kitaru._errors import SchemaVersionError, StorageError

from ..postgres._url import lock_key, quote_ident

if TYPE_CHECKING:
    from ..postgres._ops import Connection

__all__ = ("MIGRATIONS", "current_version", "migrate")

# ``{s}`` is the quoted schema name. Text columns that are compared or sorted
# use the "C" collation: byte order, as Python and SQLite sort, and prefix
# ranges on the primary key work whatever the database's locale is.
_V1 = """
CREATE TABLE {s}.runs (
    id text COLLATE "C" PRIMARY KEY,
    flow text COLLATE "C" NOT NULL,
    status text COLLATE "C" NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    input bytea,
    output bytea,
    output_ref text,
    error text,
    error_info bytea,
    owner text COLLATE "C",
    lease_until double precision,
    replay_of text,
    parent_id text,
    wait bytea,
    wake_at double precision,
    wait_topics text,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cost_usd double precision,
    metadata bytea,
    budget bytea
);
CREATE INDEX runs_status_flow ON {s}.runs (status, flow);
-- id breaks ties so list_runs' ORDER BY created_at DESC, id DESC needs no sort.
CREATE INDEX runs_created ON {s}.runs (created_at, id);
CREATE INDEX runs_owner ON {s}.runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_wake ON {s}.runs (wake_at) WHERE wake_at IS NOT NULL;

-- The primary key is the uniqueness constraint that makes a committed
-- checkpoint final: a retried or duplicated write can never add a second
-- entry at a position. (Version 2 drops the foreign key, see below.)
CREATE TABLE {s}.journal (
    run_id text COLLATE "C" NOT NULL REFERENCES {s}.runs (id) ON DELETE CASCADE,
    position integer NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL,
    started_at double precision NOT NULL,
    duration_s double precision,
    value bytea,
    ref text,
    error bytea,
    metadata bytea,
    PRIMARY KEY (run_id, position)
);

-- Ids come from a sequence, handed out under an advisory lock held until
-- commit, so they become visible in id order (a poller's "after id N" cursor
-- never skips a message that commits late). nonce is unique per post() call:
-- a post retried after a lost connection finds its first attempt.
CREATE SEQUENCE {s}.message_ids;
CREATE TABLE {s}.messages (
    id bigint PRIMARY KEY,
    run_id text COLLATE "C" NOT NULL,
    topic text NOT NULL,
    payload bytea NOT NULL,
    created_at double precision NOT NULL,
    sender text,
    key text,
    nonce text COLLATE "C" NOT NULL,
    consumed boolean NOT NULL DEFAULT false
);
-- Consumed messages keep their key: a late duplicate must still be dropped.
CREATE UNIQUE INDEX messages_key ON {s}.messages (run_id, key) WHERE key IS NOT NULL;
CREATE UNIQUE INDEX messages_nonce ON {s}.messages (nonce);
CREATE INDEX messages_pending ON {s}.messages (run_id, topic, id) WHERE NOT consumed;
CREATE INDEX messages_unconsumed ON {s}.messages (id) WHERE NOT consumed;
"""

# The journal's foreign key made every entry insert lock its run's row (FOR
# KEY SHARE: 22 us of a checkpoint upsert's 60 us on the server, measured with
# EXPLAIN ANALYZE). The statements that write entries test that the run
# exists instead, with an index probe (runs are never deleted).
_V2 = """
ALTER TABLE {s}.journal DROP CONSTRAINT IF EXISTS journal_run_id_fkey;
"""

# v3: the run's generation, bumped when continue_as_new starts its journal afresh.
_V3 = """
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0;
"""

#: DDL scripts in order; the position in this tuple is the schema version.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)

#: Tables kitaru creates: finding them without a version row means someone else's data.
_OUR_TABLES = ("runs", "journal", "messages")

# The catalogs, not to_regclass(): a name lookup may be served from a cache
# that has not yet seen another session's commit.
_HAS_VERSION = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
    "WHERE schemaname = $1 AND tablename = 'kitaru_version')"
)
_HAS_SCHEMA = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)"
_PROBE_TABLES = (
    "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = ANY($2)"
)


async def current_version(conn: Connection, schema: str, where: str) -> int:
    """Read the schema version without writing or locking anything (0: no schema yet).

    Args:
        conn: a connection outside any transaction.
        schema: the schema holding kitaru's tables.
        where: the store, redacted, for error messages.

    Raises:
        SchemaVersionError: the schema is newer than this kitaru understands.
    """
    version = await _read(conn, schema)
    _check_not_newer(version or 0, where)
    return version or 0


async def migrate(conn: Connection, schema: str, where: str) -> int:
    """Create the schema or bring it up to date; returns the version now in place.

    Safe to run from many processes at once: see the module docstring.

    Raises:
        SchemaVersionError: the database is newer than this code; nothing is written.
        StorageError: the schema holds tables kitaru did not create.
    """
    target = len(MIGRATIONS)
    if await current_version(conn, schema, where) == target:
        return target
    key = lock_key(schema, "migrate")
    await conn.execute("SELECT pg_advisory_lock($1, $2)", *key)
    try:
        async with conn.transaction():
            await _apply(conn, schema, where, target)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", *key)
    return target


async def _apply(conn: Connection, schema: str, where: str, target: int) -> None:
    s = quote_ident(schema)
    # Not CREATE SCHEMA IF NOT EXISTS: it needs the CREATE privilege on the
    # database even when an administrator has already made the schema.
    if not await conn.fetchval(_HAS_SCHEMA, schema):
        await conn.execute(f"CREATE SCHEMA {s}")
    version = await _read(conn, schema)
    if version is None:
        found = await conn.fetchval(_PROBE_TABLES, schema, list(_OUR_TABLES))
        if found:
            raise StorageError(
                f"{where}: schema {schema!r} already holds tables named like kitaru's "
                f"({', '.join(_OUR_TABLES)}) but no kitaru_version table, so they belong "
                "to another application; choose another schema with ?schema=NAME"
            )
        await conn.execute(f"CREATE TABLE {s}.kitaru_version (version integer NOT NULL)")
        await conn.execute(f"INSERT INTO {s}.kitaru_version (version) VALUES (0)")
        version = 0
    _check_not_newer(version, where)
    for number in range(version + 1, target + 1):
        # No parameters: the simple query protocol runs the whole script.
        await conn.execute(MIGRATIONS[number - 1].format(s=s))
        await conn.execute(f"UPDATE {s}.kitaru_version SET version = $1", number)


async def _read(conn: Connection, schema: str) -> int | None:
    """The version row, or ``None`` when there is no version table."""
    if not await conn.fetchval(_HAS_VERSION, schema):
        return None
    version = await conn.fetchval(f"SELECT max(version) FROM {quote_ident(schema)}.kitaru_version")
    return int(version or 0)


def _check_not_newer(version: int, where: str) -> None:
    if version > len(MIGRATIONS):
        raise SchemaVersionError(
            f"{where} has schema version {version}, but this kitaru understands versions up "
            f"to {len(MIGRATIONS)}: a newer kitaru wrote it. Upgrade kitaru "
            "(pip install -U kitaru), or point KITARU_STORE at another database or schema."
        )
