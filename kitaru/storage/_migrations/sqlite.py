"""SQLite schema: the ordered migrations and the function that applies them.

The version lives in ``PRAGMA user_version`` and a kitaru database is marked by
``PRAGMA application_id``; both sit in the file header, so they commit in the
same transaction as the DDL. Everything here runs on the connection's thread.
"""

from __future__ import annotations

import sqlite3

from kitaru._errors import SchemaVersionError, StorageError

__all__ = ("APPLICATION_ID", "MIGRATIONS", "current_version", "migrate")

#: Marks a file as a kitaru database ("KTAR" as a big-endian 32-bit integer).
APPLICATION_ID = 0x4B544152

_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY NOT NULL,
    flow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    input BLOB,
    output BLOB,
    output_ref TEXT,
    error TEXT,
    error_info BLOB,
    owner TEXT,
    lease_until REAL,
    replay_of TEXT,
    parent_id TEXT,
    wait BLOB,
    wake_at REAL,
    wait_topics TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    metadata BLOB
);
CREATE INDEX runs_status_flow ON runs (status, flow);
-- id breaks ties so list_runs' ORDER BY created_at DESC, id DESC needs no sort.
CREATE INDEX runs_created ON runs (created_at, id);
CREATE INDEX runs_owner ON runs (owner);
CREATE INDEX runs_wake ON runs (wake_at) WHERE wake_at IS NOT NULL;

-- WITHOUT ROWID: the primary key is the row's only b-tree, so the 32-character
-- run id is stored once per entry instead of twice (table plus index).
CREATE TABLE journal (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    started_at REAL NOT NULL,
    duration_s REAL,
    value BLOB,
    ref TEXT,
    error BLOB,
    metadata BLOB,
    PRIMARY KEY (run_id, position)
) WITHOUT ROWID;

-- AUTOINCREMENT: ids are never reused, so a poller's "messages after id N"
-- cursor stays valid even if old messages are deleted one day.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    sender TEXT,
    key TEXT,
    consumed INTEGER NOT NULL DEFAULT 0
);
-- Consumed messages keep their key: a late duplicate must still be dropped.
CREATE UNIQUE INDEX messages_key ON messages (run_id, key) WHERE key IS NOT NULL;
CREATE INDEX messages_pending ON messages (run_id, topic, id) WHERE consumed = 0;
"""

# v2: a run's own token/cost budget (JSON), set by rt.start(..., budget=...).
_V2 = """
ALTER TABLE runs ADD COLUMN budget BLOB;
"""

# v3: the run's generation, bumped when continue_as_new starts its journal afresh.
_V3 = """
ALTER TABLE runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
"""

_PROBE = (
    "SELECT (SELECT user_version FROM pragma_user_version), "
    "(SELECT application_id FROM pragma_application_id), "
    "EXISTS (SELECT 1 FROM sqlite_master)"
)

#: DDL scripts in order; the position in this tuple is the schema version.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)


def current_version(conn: sqlite3.Connection, where: str) -> int:
    """Read the schema version without writing anything.

    Args:
        conn: a connection to the database.
        where: the database path, for error messages.

    Raises:
        StorageError: the file is a SQLite database of another application.
        SchemaVersionError: the schema is newer than this kitaru understands.
        sqlite3.DatabaseError: the file is not a SQLite database at all.
    """
    # One statement, so one snapshot: read separately, another process's first
    # migration could commit in between and make a new kitaru file look foreign.
    version, app, has_schema = conn.execute(_PROBE).fetchone()
    # kitaru sets both header fields in its first migration, so a database
    # without our mark must be empty: anything else belongs to someone else.
    if app != APPLICATION_ID and (version != 0 or has_schema):
        raise StorageError(
            f"{where} is not a kitaru SQLite database (it holds another application's "
            f"data, application_id={app}, user_version={version}); move it aside or "
            "point KITARU_STORE elsewhere"
        )
    if version > len(MIGRATIONS):
        raise SchemaVersionError(
            f"{where} has schema version {version}, but this kitaru understands versions up "
            f"to {len(MIGRATIONS)}: a newer kitaru wrote it. Upgrade kitaru "
            "(pip install -U kitaru), or point KITARU_STORE at another database."
        )
    return int(version)


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Apply pending migrations and return the schema version now in place.

    ``conn`` must be in autocommit mode (``isolation_level=None``). The check
    is repeated under ``BEGIN IMMEDIATE``, so two processes opening the same
    new file at once apply each migration exactly once.

    Raises:
        SchemaVersionError: the database is newer than this code; nothing is written.
    """
    target = len(MIGRATIONS)
    if current_version(conn, where) == target:
        return target
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn, where)  # another process may have won the lock
        for number in range(version + 1, target + 1):
            for statement in _statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            # PRAGMAs take no parameters; both values are our own integers.
            conn.execute(f"PRAGMA user_version = {number:d}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return target


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our open transaction first (Python 3.11), so
    # scripts are split here; complete_statement() keeps ";" inside literals intact.
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            text = buffer.strip().rstrip(";").strip()
            if text and not all(line.lstrip().startswith("--") for line in text.splitlines()):
                statements.append(text)
            buffer = ""
    if buffer.strip().rstrip(";").strip():
        raise ValueError(f"migration ends with an incomplete statement: {buffer.strip()!r}")
    return statements
