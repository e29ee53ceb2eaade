"""The runtime's services: one task each, never one per run.

- ``lease_service`` extends every lease this runtime holds with one statement
  and sweeps (one query) for ``running`` runs whose owner is gone;
- ``timer_service`` sleeps until the store's next deadline of an evicted run
  (a sleep's end, a wait's timeout) and rehydrates the runs that are due;
- ``wake_service`` notices messages written by other processes: it asks the
  store for a change token (free when nothing changed) and, when it moved,
  fetches the messages that arrived since the last look, with one query.

Resident suspended flows do not need the timer service: their own wait holds
the deadline in memory.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import anyio

from .._errors import StorageError

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = ("lease_service", "timer_service", "wake_service")

log = logging.getLogger("kitaru.timers")

#: Seconds between re-reads of the next deadline (another process may add an
#: earlier one); local changes kick the service at once.
_RESCAN = 5.0
_BATCH = 1000


async def lease_service(runtime: Runtime) -> None:
    """Renew this runtime's leases and resume orphaned runs, forever."""
    period = runtime.config.lease_seconds / 3
    while True:
        await anyio.sleep(period)
        try:
            await runtime.store.renew_leases(
                runtime.owner, runtime.clock.now() + runtime.config.lease_seconds
            )
            await runtime.recover()
        except StorageError as exc:
            log.warning("lease renewal failed (%s); retrying in %.1f s", exc, period)


async def timer_service(runtime: Runtime) -> None:
    """Rehydrate evicted runs whose sleep ended or whose wait timed out."""
    store = runtime.store
    clock = runtime.clock
    while True:
        runtime.timer_kick = kick = anyio.Event()
        try:
            flows = runtime.flow_names
            now = clock.now()
            nxt = await store.next_wake(flows, now=now) if flows else None
            if nxt is not None and nxt <= now:
                for run_id in await store.due(flows, now=now, limit=_BATCH):
                    await runtime.wake(run_id)
                continue
        except StorageError as exc:
            log.warning("timer service: %s; retrying", exc)
            nxt = None
        target = clock.now() + _RESCAN if nxt is None else min(nxt, clock.now() + _RESCAN)
        if math.isfinite(target):
            await clock.sleep_until(target, kick)


async def wake_service(runtime: Runtime) -> None:
    """Deliver messages that other processes wrote to the store."""
    store = runtime.store
    seen_token: int | None = None
    last_id = 0
    while True:
        try:
            token = await store.change_token()
            if token != seen_token:
                seen_token = token
                while True:
                    messages = await store.messages_after(last_id, limit=_BATCH)
                    for message in messages:
                        last_id = max(last_id, message.id)
                        if message.id in runtime.posted:
                            runtime.posted.discard(message.id)  # delivered when posted
                            continue
                        await runtime.wake(message.run_id, message.topic)
                    if len(messages) < _BATCH:
                        break
                # Local ids at or below what the store has shown us were either
                # skipped above or consumed before we looked: forget them.
                runtime.posted.difference_update([i for i in runtime.posted if i <= last_id])
        except StorageError as exc:
            log.warning("wake service: %s; retrying", exc)
        await anyio.sleep(runtime.config.poll_interval)
