"""Every backend conforms to the RunStore Protocol, checked by mypy on this module.

A backend that misses a method or gets a signature wrong fails type checking
here, not at run time in production; the runtime test below only confirms
that the ``runtime_checkable`` Protocol agrees.
"""

from __future__ import annotations

from kitaru.storage import RunStore
from kitaru.storage.memory import MemoryStore
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.sqlite import SQLiteStore


def _memory(store: MemoryStore) -> RunStore:
    return store


def _sqlite(store: SQLiteStore) -> RunStore:
    return store


def _postgres(store: PostgresStore) -> RunStore:
    return store


def test_backends_are_run_stores() -> None:
    # Constructors do no I/O, so nothing needs closing here.
    memory: RunStore = MemoryStore("memory://")
    sqlite: RunStore = SQLiteStore("sqlite:///never-opened.db")
    postgres: RunStore = PostgresStore("postgresql://nobody@127.0.0.1:1/never-opened")
    assert isinstance(memory, RunStore)
    assert isinstance(sqlite, RunStore)
    assert isinstance(postgres, RunStore)
