"""Every backend conforms to the RunStore Protocol, checked by mypy on this module.

A backend that misses a method or gets a signature wrong fails type checking
here, not at run time in production; the runtime tests below only confirm
that the ``runtime_checkable`` Protocols agree. The same goes for the
optional capabilities a backend declares (PostgreSQL has all three).
"""

from __future__ import annotations

import pytest

from kitaru.storage import AnnouncesRunnable, BulkClaims, RunStore, SignalsChanges
from kitaru.storage.memory import MemoryStore
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.sqlite import SQLiteStore

CAPABILITIES = (BulkClaims, SignalsChanges, AnnouncesRunnable)


def _memory(store: MemoryStore) -> RunStore:
    return store


def _sqlite(store: SQLiteStore) -> RunStore:
    return store


def _postgres(store: PostgresStore) -> RunStore:
    return store


def _postgres_claims(store: PostgresStore) -> BulkClaims:
    return store


def _postgres_signals(store: PostgresStore) -> SignalsChanges:
    return store


def _postgres_announces(store: PostgresStore) -> AnnouncesRunnable:
    return store


def test_backends_are_run_stores() -> None:
    # Constructors do no I/O, so nothing needs closing here.
    memory: RunStore = MemoryStore("memory://")
    sqlite: RunStore = SQLiteStore("sqlite:///never-opened.db")
    postgres: RunStore = PostgresStore("postgresql://nobody@127.0.0.1:1/never-opened")
    assert isinstance(memory, RunStore)
    assert isinstance(sqlite, RunStore)
    assert isinstance(postgres, RunStore)


@pytest.mark.parametrize("capability", CAPABILITIES, ids=lambda c: c.__name__)
def test_postgres_has_every_capability(capability: type) -> None:
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/never-opened")
    assert isinstance(store, capability)


@pytest.mark.parametrize("capability", CAPABILITIES, ids=lambda c: c.__name__)
def test_embedded_stores_have_none(capability: type) -> None:
    # The runtime takes their portable path (RunStore's methods alone).
    assert not isinstance(MemoryStore("memory://"), capability)
    assert not isinstance(SQLiteStore("sqlite:///never-opened.db"), capability)
