"""Fixtures of the storage suite: one open, empty run store per backend.

The backends come from ``store_url`` in ``tests/conftest.py`` (memory and a
SQLite file under ``tmp_path``); adding PostgreSQL there, as one more param,
runs this whole suite against it too. ``anyio_backend`` comes from there as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kitaru.storage import RunStore, open_store


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[RunStore]:
    """An open run store on this test's fresh database; closed afterwards."""
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.aclose()
