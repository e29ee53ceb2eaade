"""An artifact store opened on first use.

Most runs never hold a value above the inline threshold; opening the artifact
store lazily keeps fsspec out of start-up and recovery time for them.
"""

from __future__ import annotations

import anyio

from ..base import ArtifactStore

__all__ = ("LazyArtifacts",)


class LazyArtifacts:
    """Stands in for the artifact store at ``url`` until it is first needed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: ArtifactStore | None = None
        self._lock = anyio.Lock()

    async def _open(self) -> ArtifactStore:
        store = self._store
        if store is None:
            async with self._lock:
                store = self._store
                if store is None:
                    from ._store import open_artifacts  # fsspec's machinery, on first use

                    store = self._store = await open_artifacts(self.url)
        return store

    async def put(self, data: bytes) -> str:
        """Store ``data``; return its content reference."""
        return await (await self._open()).put(data)

    async def get(self, ref: str) -> bytes:
        """Read the bytes under ``ref``."""
        return await (await self._open()).get(ref)

    async def aclose(self) -> None:
        """Close the underlying store if it was ever opened."""
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()
