"""Shared fixtures: anyio on asyncio, a store URL per backend, a runtime factory, an LLM guard."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import kitaru
from kitaru.storage._url import redact
from kitaru.testing import always_evict, forbid_real_llm_calls
from tests.postgres import _server as pg

# litellm's bundled price table, instead of fetching the latest one when it is imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite and asyncpg are asyncio-only.
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs in its own folder with no KITARU_* settings leaking in."""
    for name in list(os.environ):
        if name.startswith("KITARU_") and name != "KITARU_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    kitaru.configure()
    yield
    kitaru.configure()


@pytest.fixture(autouse=True)
def _no_real_llm_calls() -> Iterator[None]:
    """Any LLM call that would reach a real provider fails the test (use mock_response)."""
    with forbid_real_llm_calls():
        yield


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server of KITARU_TEST_POSTGRES_URL, checked once per session.

    Unset: PostgreSQL tests skip. Set but unreachable: they skip too, except
    under ``CI=true``, where they fail.
    """
    url = pg.server_url()
    if url is None:
        pytest.skip(pg.SKIP_REASON)
    problem = pg.probe(url)
    if problem is not None:
        message = f"PostgreSQL at {redact(url)} ({pg.ENV}) is unreachable: {problem}"
        if pg.in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A store URL on the test server with a schema of its own, dropped afterwards."""
    schema = f"kt_{uuid.uuid4().hex[:12]}"
    yield pg.schema_url(postgres_server, schema)
    pg.drop_schema(postgres_server, schema)


#: Suites whose tests run on PostgreSQL too (the storage contract, the journal,
#: the runtime and the actors); the others (LLM, API, CLI) test their own layer on
#: memory and SQLite.
_POSTGRES_SUITES = ("storage", "journal", "runtime", "actors", "postgres")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the ``postgres`` param of ``store_url`` to the suites listed above."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("store_url") == "postgres"
        suite = item.path.parent.name
        (dropped if on_postgres and suite not in _POSTGRES_SUITES else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh run store URL for each backend (PostgreSQL: a schema of its own)."""
    if request.param == "memory":
        return f"memory://{request.node.name}-{id(request)}"
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'kitaru.db'}"


RuntimeFactory = Callable[..., AbstractAsyncContextManager[kitaru.Runtime]]


@pytest.fixture(params=["resident", "always-evict"])
def evict_mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every flow test runs twice: normally, and evicting at every wait and sleep."""
    return always_evict() if request.param == "always-evict" else {}


@pytest.fixture
def make_runtime(store_url: str, tmp_path: Path, evict_mode: dict[str, Any]) -> RuntimeFactory:
    """Open runtimes on this test's store (call it again to simulate a restart)."""

    def factory(**kwargs: Any) -> AbstractAsyncContextManager[kitaru.Runtime]:
        kwargs.setdefault("store", store_url)
        kwargs.setdefault("artifacts", str(tmp_path / "artifacts"))
        for key, value in evict_mode.items():
            kwargs.setdefault(key, value)
        return kitaru.runtime(**kwargs)

    return factory


@pytest.fixture
async def rt(make_runtime: RuntimeFactory) -> AsyncIterator[kitaru.Runtime]:
    """An open runtime on this test's store."""
    async with make_runtime() as runtime:
        yield runtime
