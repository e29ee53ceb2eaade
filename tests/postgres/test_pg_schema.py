"""PostgreSQL schema: migrations under concurrency, versions, foreign tables."""

from __future__ import annotations

import anyio
import pytest

from kitaru import SchemaVersionError, StorageError
from kitaru.storage import JournalEntry, RunRecord, open_store
from kitaru.storage._migrations.postgres import MIGRATIONS
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.postgres._url import parse_url, quote_ident
from tests.postgres import _server as pg

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_concurrent_openers_migrate_once(postgres_url: str, postgres_server: str) -> None:
    stores: list[PostgresStore] = [PostgresStore(postgres_url) for _ in range(6)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        await stores[0].create_run(RunRecord("r1", "f", "running", 1.0, 1.0))
        for store in stores:
            assert (await store.get_run("r1")) is not None
    finally:
        for store in stores:
            await store.aclose()
    schema = parse_url(postgres_url).schema
    conn = await pg.admin(postgres_server)
    try:
        rows = await conn.fetch(f"SELECT version FROM {quote_ident(schema)}.kitaru_version")
        assert [r[0] for r in rows] == [len(MIGRATIONS)]
    finally:
        await conn.close()


async def test_reopening_an_up_to_date_schema_keeps_its_data(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.create_run(RunRecord("r1", "f", "running", 1.0, 1.0))
    async with PostgresStore(postgres_url) as store:
        assert (await store.get_run("r1")) is not None


async def test_a_newer_schema_is_refused(postgres_url: str, postgres_server: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.create_run(RunRecord("r1", "f", "running", 1.0, 1.0))
    schema = parse_url(postgres_url).schema
    conn = await pg.admin(postgres_server)
    try:
        await conn.execute(f"UPDATE {quote_ident(schema)}.kitaru_version SET version = 99")
    finally:
        await conn.close()
    with pytest.raises(SchemaVersionError, match="schema version 99") as caught:
        await open_store(postgres_url)
    assert f"up to {len(MIGRATIONS)}" in str(caught.value)
    assert "pip install -U kitaru" in str(caught.value)


async def test_someone_elses_tables_are_left_alone(postgres_url: str, postgres_server: str) -> None:
    schema = quote_ident(parse_url(postgres_url).schema)
    conn = await pg.admin(postgres_server)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.runs (x int)")
    finally:
        await conn.close()
    with pytest.raises(StorageError, match="another application"):
        await open_store(postgres_url)


async def test_each_schema_is_a_separate_store(postgres_server: str) -> None:
    first, second = pg.schema_url(postgres_server), pg.schema_url(postgres_server)
    try:
        async with PostgresStore(first) as a, PostgresStore(second) as b:
            await a.create_run(RunRecord("r1", "f", "running", 1.0, 1.0))
            assert await b.get_run("r1") is None
    finally:
        for url in (first, second):
            pg.drop_schema(postgres_server, parse_url(url).schema)


async def test_a_version_1_schema_is_upgraded_with_its_data(
    postgres_url: str, postgres_server: str
) -> None:
    """Versions 2 and 3 (no journal foreign key, a run's generation) keep runs and entries."""
    schema = parse_url(postgres_url).schema
    s = quote_ident(schema)
    conn = await pg.admin(postgres_server)
    try:  # a schema as the first release left it
        await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(f"CREATE TABLE {s}.kitaru_version (version integer NOT NULL)")
        await conn.execute(f"INSERT INTO {s}.kitaru_version (version) VALUES (1)")
        await conn.execute(MIGRATIONS[0].format(s=s))
        await conn.execute(
            f"INSERT INTO {s}.runs (id, flow, status, created_at, updated_at) "
            "VALUES ('old', 'f', 'running', 1.0, 1.0)"
        )
        await conn.execute(
            f"INSERT INTO {s}.journal (run_id, position, name, kind, status, attempts, "
            "started_at, value) VALUES ('old', 0, 'step', 'checkpoint', 'completed', 1, 1.0, "
            "'1'::bytea)"
        )
    finally:
        await conn.close()

    def entry(run_id: str, position: int) -> JournalEntry:
        return JournalEntry(run_id, position, "s", "checkpoint", "completed", 1, 2.0, 0.1)

    async with PostgresStore(postgres_url) as store:
        assert [e.position for e in await store.load_journal("old")] == [0]
        assert await store.record([entry("old", 1)])
        with pytest.raises(StorageError, match="unknown run gone"):
            await store.record([entry("gone", 0)])
    conn = await pg.admin(postgres_server)
    try:
        assert await conn.fetchval(f"SELECT max(version) FROM {s}.kitaru_version") == len(
            MIGRATIONS
        )
        assert await conn.fetchval(f"SELECT generation FROM {s}.runs WHERE id = 'old'") == 0
        keys = await conn.fetchval(
            "SELECT count(*) FROM pg_catalog.pg_constraint WHERE contype = 'f' "
            "AND conrelid = $1::regclass",
            f"{s}.journal",
        )
        assert keys == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {s}.journal WHERE run_id = 'gone'") == 0
    finally:
        await conn.close()
