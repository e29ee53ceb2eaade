"""PostgreSQL store URLs and SQL building: no server needed."""

from __future__ import annotations

import dataclasses
import re

import pytest

from kitaru import ConfigurationError
from kitaru.storage import RunPatch, RunRecord, RunStore
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.postgres._sql import PATCH_FIELDS, queries
from kitaru.storage.postgres._url import lock_key, parse_url
from kitaru.storage.postgres._writes import patch_applied


def test_kitaru_parameters_are_split_from_the_dsn() -> None:
    settings = parse_url(
        "postgresql+asyncpg://me:p%40ss@db:5433/runs?schema=team_a&pool_min=0&pool_max=4"
        "&retry_for=2.5&connect_timeout=3&command_timeout=9&statement_cache_size=0"
        "&listen=off&application_name=worker&sslmode=disable"
    )
    assert settings.dsn == "postgresql://me:p%40ss@db:5433/runs?sslmode=disable"
    assert (settings.schema, settings.pool_min, settings.pool_max) == ("team_a", 0, 4)
    assert (settings.retry_for, settings.connect_timeout, settings.command_timeout) == (2.5, 3, 9)
    assert (settings.statement_cache_size, settings.listen) == (0, False)
    assert settings.application_name == "worker"
    assert settings.secret == "p@ss"
    assert "p@ss" not in repr(settings) and "p%40ss" not in repr(settings)
    assert settings.channel == "kitaru_team_a"


def test_defaults() -> None:
    settings = parse_url("postgres://db/runs")
    assert settings.dsn == "postgresql://db/runs"
    assert (settings.schema, settings.pool_min, settings.pool_max) == ("kitaru", 1, 10)
    assert (settings.retry_for, settings.listen, settings.command_timeout) == (30.0, True, 60.0)
    assert parse_url("postgres://db/runs?command_timeout=none").command_timeout is None
    assert settings.secret is None


def test_password_in_the_query_is_known_as_secret() -> None:
    assert parse_url("postgresql://db/runs?password=hunter2").secret == "hunter2"


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("schema=bad-name", "schema"),
        ("schema=", "schema"),
        ("pool_max=0", "pool_max"),
        ("pool_min=5&pool_max=2", "pool_min"),
        ("pool_max=lots", "pool_max"),
        ("retry_for=-1", "retry_for"),
        ("listen=maybe", "listen"),
    ],
)
def test_bad_parameters_are_refused_with_the_url_redacted(query: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        PostgresStore(f"postgresql://me:hunter2@db/runs?{query}")
    assert "hunter2" not in str(caught.value)
    assert "me:***@db" in str(caught.value)


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not a PostgreSQL URL"):
        PostgresStore("postgresql+psycopg://db/runs")


def test_long_schema_names_get_a_short_channel() -> None:
    settings = parse_url(f"postgresql://db/x?schema={'s' * 60}")
    assert len(settings.channel) <= 63
    assert settings.channel.startswith("kitaru_")


def test_lock_keys_fit_in_int4_and_differ_by_purpose() -> None:
    for schema in ("kitaru", "a", "z" * 63):
        for purpose in ("migrate", "post"):
            for part in lock_key(schema, purpose):
                assert -(2**31) <= part < 2**31
    assert lock_key("kitaru", "migrate") != lock_key("kitaru", "post")


def test_patch_statement_covers_every_runpatch_field() -> None:
    # A new RunPatch field must be taught to the PostgreSQL UPDATE too.
    assert set(PATCH_FIELDS) == {f.name for f in dataclasses.fields(RunPatch)}


def test_statements_use_numbered_placeholders_only() -> None:
    compiled = queries("kitaru")
    for name, statement in [*compiled.sql.items(), *compiled.list_runs.items()]:
        assert not re.search(r"\$[a-z_]", statement.sql), name
        for number in range(1, len(statement.names) + 1):
            assert f"${number}" in statement.sql, name


def test_patch_applied_recognises_every_effect() -> None:
    run = RunRecord(
        "r", "f", "waiting", 1.0, 2.0, error="E", owner=None, wake_at=5.0, wait_topics="t"
    )
    patch = RunPatch("r", 2.0, status="waiting", clear_wait=True, wake_at=5.0, wait_topics="t")
    assert patch_applied(run, patch)
    assert patch_applied(run, dataclasses.replace(patch, release=True))
    assert not patch_applied(run, dataclasses.replace(patch, updated_at=3.0))
    assert not patch_applied(run, dataclasses.replace(patch, status="running"))
    assert not patch_applied(run, dataclasses.replace(patch, wake_at=6.0))
    assert not patch_applied(run, dataclasses.replace(patch, clear_error=True))
    assert not patch_applied(None, patch)
    held = dataclasses.replace(run, owner="w", lease_until=9.0)
    assert not patch_applied(held, dataclasses.replace(patch, release=True))


def test_constructor_does_no_io_and_is_a_run_store() -> None:
    store: RunStore = PostgresStore("postgresql://nobody@127.0.0.1:1/never")
    assert isinstance(store, RunStore)
    assert repr(store) == "PostgresStore('postgresql://nobody@127.0.0.1:1/never')"
