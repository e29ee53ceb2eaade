"""Shared fixtures: anyio on asyncio, a store URL per backend, a runtime factory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import kitaru
from kitaru.testing import always_evict


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


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh run store URL for each backend."""
    if request.param == "memory":
        return f"memory://{request.node.name}-{id(request)}"
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
