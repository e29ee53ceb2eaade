"""In-process notice that a run changed, for live views (the HTTP API's events).

The runtime calls :meth:`EventBus.touch` after each change it makes to a run;
with nobody watching that costs one attribute test. Kept apart from
``kitaru.integrations.fastapi.events`` (which derives the events themselves
from the store) so that ``import kitaru`` does not load the event machinery.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..storage.base import RunStore

__all__ = ("EventBus", "Subscription")


class Subscription:
    """What one watcher hears from the bus: which runs changed, and a wake-up."""

    __slots__ = ("_event", "changed")

    def __init__(self) -> None:
        self._event = anyio.Event()
        #: Runs touched since the last :meth:`take`.
        self.changed: set[str] = set()

    def notify(self, run_id: str) -> None:
        """A run changed in this process."""
        self.changed.add(run_id)
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a touch; True if one came."""
        if not self._event.is_set():
            with anyio.move_on_after(seconds):
                await self._event.wait()
        touched = self._event.is_set()
        if touched:
            self._event = anyio.Event()
        return touched

    def take(self) -> set[str]:
        """The runs touched since the last call."""
        changed, self.changed = self.changed, set()
        return changed


class EventBus:
    """In-process notifications that a run changed, for watchers of one runtime."""

    __slots__ = ("_all", "_runs", "_token", "_token_at", "_token_lock", "listening")

    def __init__(self) -> None:
        self._runs: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        #: False while nobody watches: :meth:`touch` then returns at once.
        self.listening = False
        self._token: int | None = None
        self._token_at = 0.0
        self._token_lock: anyio.Lock | None = None

    def touch(self, run_id: str) -> None:
        """The runtime changed ``run_id`` in the store: wake whoever watches it."""
        if not self.listening:
            return
        subs = self._runs.get(run_id)
        if subs:
            for sub in subs:
                sub.notify(run_id)
        for sub in self._all:
            sub.notify(run_id)

    @contextmanager
    def subscribe(self, run_id: str | None = None) -> Iterator[Subscription]:
        """Hear about ``run_id`` (every run when ``None``) while inside."""
        sub = Subscription()
        if run_id is None:
            self._all.add(sub)
        else:
            self._runs.setdefault(run_id, set()).add(sub)
        self.listening = True
        try:
            yield sub
        finally:
            if run_id is None:
                self._all.discard(sub)
            else:
                subs = self._runs.get(run_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._runs[run_id]
            self.listening = bool(self._runs or self._all)

    async def change_token(self, store: RunStore, max_age: float) -> int:
        """The store's change token, read at most once per ``max_age`` for all watchers."""
        if self._token_lock is None:
            self._token_lock = anyio.Lock()
        async with self._token_lock:
            now = time.monotonic()
            if self._token is None or now - self._token_at >= max_age:
                self._token = await store.change_token()
                self._token_at = now
            return self._token
