"""Stores for tests that need the store to fail on cue."""

from __future__ import annotations

from collections.abc import Sequence

import kitaru
from kitaru.storage import JournalEntry, RunPatch, register_store
from kitaru.storage.memory import MemoryStore


class FlakyStore(MemoryStore):
    """A memory store (scheme ``flaky://``) whose next ``failures`` journal writes fail.

    They fail like a lost connection (``kitaru.StorageError``), so the runtime
    treats them as infrastructure failures and restarts the run.
    """

    failures = 0

    async def record(self, entries: Sequence[JournalEntry], patch: RunPatch | None = None) -> bool:
        if entries and FlakyStore.failures > 0:
            FlakyStore.failures -= 1
            raise kitaru.StorageError("connection lost (injected)")
        return await super().record(entries, patch)


register_store("flaky", FlakyStore, clobber=True)
