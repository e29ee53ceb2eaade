"""The SQLite writer commits small batches on the loop, and never waits there."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from kitaru.storage import JournalEntry, RunRecord
from kitaru.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def run(run_id: str) -> RunRecord:
    now = time.time()
    return RunRecord(id=run_id, flow="f", status="running", created_at=now, updated_at=now)


def entry(position: int) -> JournalEntry:
    return JournalEntry(
        "r1", position, "step", "checkpoint", "completed", 1, time.time(), 0.0, b"1"
    )


async def test_uncontended_batches_commit_inline(tmp_path: Path) -> None:
    async with SQLiteStore(f"sqlite:///{tmp_path / 'k.db'}") as store:
        await store.create_run(run("r1"))
        for position in range(10):
            assert await store.record([entry(position)])
        stats = store.statistics()
        assert stats.inline == stats.batches


async def test_a_held_lock_sends_the_batch_to_the_thread_not_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    async with SQLiteStore(f"sqlite:///{db}") as store:
        await store.create_run(run("r1"))
        blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        threading.Timer(0.3, lambda: blocker.execute("ROLLBACK")).start()
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(heartbeat)
                assert await store.record([entry(0)])  # waits for the lock, off the loop
                tg.cancel_scope.cancel()
        finally:
            blocker.close()
        assert ticks >= 10  # the loop kept running while the commit waited
        assert [e.position for e in await store.load_journal("r1")] == [0]
        assert store.statistics().inline < store.statistics().batches
