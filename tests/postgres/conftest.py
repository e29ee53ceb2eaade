"""Fixtures of the PostgreSQL tests: a cuttable proxy in front of the test server.

``postgres_server`` and ``postgres_url`` (a fresh schema per test) come from
``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.postgres._proxy import Pooler, TcpProxy


@pytest.fixture
async def proxy(postgres_server: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy on 127.0.0.1 in front of the test server."""
    parts = urlsplit(postgres_server)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as running:
        yield running


@pytest.fixture(params=["refuse", "drop"])
async def pooler(request: pytest.FixtureRequest, postgres_server: str) -> AsyncIterator[Pooler]:
    """A PgBouncer-like proxy that refuses, or silently drops, unknown startup parameters."""
    parts = urlsplit(postgres_server)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    async with Pooler(host, port, request.param) as running:
        yield running
