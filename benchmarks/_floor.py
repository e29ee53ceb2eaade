"""The floor: what one durable row costs through aiosqlite with no framework at all.

One ``INSERT`` then one ``COMMIT`` per row, each awaited (``await db.execute(...)``
then ``await db.commit()``), on a SQLite file with the store's PRAGMAs
(``journal_mode=WAL``, ``synchronous=NORMAL``). The row has the shape of a
trivial checkpoint's journal entry: a 32-character run id, an int position, a
short text (standing for name, kind and status), a float timestamp and the
value ``b"null"``; about 80 bytes.
"""

from __future__ import annotations

import gc
import time
import uuid
from pathlib import Path

import aiosqlite

__all__ = ("FLOOR_ROW_TEXT", "floor_commits", "round_trips")

#: name + kind + status of a checkpoint entry, as one short text column.
FLOOR_ROW_TEXT = "step|checkpoint|completed"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS floor ("
    "run_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, "
    "started_at REAL NOT NULL, value BLOB, PRIMARY KEY (run_id, position)"
    ") WITHOUT ROWID"
)
_INSERT = "INSERT INTO floor (run_id, position, name, started_at, value) VALUES (?, ?, ?, ?, ?)"


async def floor_commits(path: Path, rows: int) -> float:
    """Seconds for ``rows`` sequential INSERT + COMMIT pairs on a fresh connection.

    Connecting and creating the table are not timed.
    """
    db = await aiosqlite.connect(path)
    try:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute(_SCHEMA)
        await db.commit()
        run_id = uuid.uuid4().hex
        gc.collect()
        start = time.perf_counter()
        for position in range(rows):
            await db.execute(_INSERT, (run_id, position, FLOOR_ROW_TEXT, time.time(), b"null"))
            await db.commit()
        return time.perf_counter() - start
    finally:
        await db.close()


async def round_trips(path: Path, count: int) -> float:
    """Seconds for ``count`` sequential ``await db.execute("SELECT 1")`` (one thread hop each).

    Not a target floor: it shows how much of the floor is the hop into
    aiosqlite's worker thread, which depends on the machine (an idle second
    core that has to be woken makes it several times slower).
    """
    db = await aiosqlite.connect(path)
    try:
        await db.execute("SELECT 1")
        gc.collect()
        start = time.perf_counter()
        for _ in range(count):
            await db.execute("SELECT 1")
        return time.perf_counter() - start
    finally:
        await db.close()
