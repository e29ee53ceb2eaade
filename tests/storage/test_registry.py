"""Choosing a store by URL: the scheme registry, install hints and password redaction."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kitaru import ConfigurationError
from kitaru.storage import _registry, open_store, register_store
from kitaru.storage._url import redact, scheme_of
from kitaru.storage.memory import MemoryStore
from kitaru.storage.sqlite import SQLiteStore


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    saved, hints = dict(_registry._registry), dict(_registry._hints)
    yield
    _registry._registry.clear()
    _registry._registry.update(saved)
    _registry._hints.clear()
    _registry._hints.update(hints)


class CustomStore(MemoryStore):
    opened = False

    async def open(self) -> CustomStore:
        self.opened = True
        return self


@pytest.mark.anyio
async def test_open_store_picks_the_backend_by_scheme(tmp_path: Path) -> None:
    memory = await open_store("memory://")
    assert isinstance(memory, MemoryStore)
    await memory.aclose()
    sqlite = await open_store(f"sqlite:///{tmp_path / 'k.db'}")
    assert isinstance(sqlite, SQLiteStore)
    await sqlite.get_run("r1")  # it is open
    await sqlite.aclose()


@pytest.mark.anyio
async def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        await open_store("redis://user:hunter2@host/0")
    message = str(caught.value)
    assert "'redis'" in message
    assert "memory://, postgres://, postgresql://, sqlite://" in message
    assert "hunter2" not in message
    assert "redis://user:***@host/0" in message


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+asyncpg"])
async def test_missing_driver_gives_the_install_hint(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes "import asyncpg" fail as if it were not installed;
    # the store module itself must not need asyncpg to be imported.
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ConfigurationError, match="pip install asyncpg") as caught:
        await open_store(f"{scheme}://kitaru:s3cret@db.example/runs")
    assert "s3cret" not in str(caught.value)


@pytest.mark.anyio
async def test_url_without_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not a store URL"):
        await open_store("kitaru.db")


@pytest.mark.anyio
async def test_register_store_with_a_class() -> None:
    register_store("custom", CustomStore)
    store = await open_store("custom://x")
    assert isinstance(store, CustomStore)
    assert store.opened
    await store.aclose()


@pytest.mark.anyio
async def test_register_store_with_a_lazy_target() -> None:
    register_store("Lazy", f"{__name__}:CustomStore")
    assert _registry.registry["lazy"] == f"{__name__}:CustomStore"
    store = await open_store("lazy://x")
    assert isinstance(store, CustomStore)
    await store.aclose()


@pytest.mark.anyio
async def test_register_store_hint_for_a_missing_module() -> None:
    register_store("ext", "kitaru_ext_missing.store:Store", hint="pip install kitaru-ext")
    with pytest.raises(ConfigurationError, match="pip install kitaru-ext"):
        await open_store("ext://x")


@pytest.mark.anyio
async def test_target_without_the_class_is_refused() -> None:
    register_store("nocls", "kitaru.storage.memory:NoSuchStore")
    with pytest.raises(ConfigurationError, match="has no class 'NoSuchStore'"):
        await open_store("nocls://x")


@pytest.mark.anyio
async def test_target_that_is_not_a_run_store_is_refused() -> None:
    register_store("notstore", "pathlib:PurePath")
    with pytest.raises(ConfigurationError, match="does not implement the RunStore") as caught:
        await open_store("notstore://x")
    assert "missing: aclose, change_token, claim" in str(caught.value)


def test_register_store_refuses_to_clobber_silently() -> None:
    with pytest.raises(ConfigurationError, match="already served"):
        register_store("sqlite", CustomStore)
    register_store("sqlite", "kitaru.storage.sqlite:SQLiteStore")  # same target: fine
    register_store("sqlite", CustomStore, clobber=True)
    assert _registry.registry["sqlite"] is CustomStore


@pytest.mark.parametrize("target", ["no_colon", "module:", ":Class"])
def test_register_store_checks_the_target(target: str) -> None:
    with pytest.raises(ConfigurationError, match=r"package\.module:ClassName"):
        register_store("custom", target)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        _registry.registry["x"] = "a:B"  # type: ignore[index]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:pw@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql://user:p@ss@host/db", "postgresql://user:***@host/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host/db?password=pw&sslmode=require", None),
        ("sqlite:////srv/kitaru.db", "sqlite:////srv/kitaru.db"),
        ("memory://", "memory://"),
        ("not a url", "not a url"),
        (
            "s3://b/p?secret=s&endpoint_url=http://h",
            "s3://b/p?secret=***&endpoint_url=http%3A%2F%2Fh",
        ),
        ("s3://b/p?aws_secret_access_key=s", "s3://b/p?aws_secret_access_key=***"),
        ("s3://b/p?token=t&key=k&api_key=a", "s3://b/p?token=***&key=***&api_key=***"),
    ],
)
def test_redact(url: str, shown: str | None) -> None:
    if shown is None:
        assert redact(url) == "postgresql://host/db?password=***&sslmode=require"
    else:
        assert redact(url) == shown


def test_scheme_of() -> None:
    assert scheme_of("SQLite:///x.db") == "sqlite"
    assert scheme_of("postgresql+asyncpg://h/db") == "postgresql+asyncpg"
    with pytest.raises(ConfigurationError):
        scheme_of("/just/a/path")
