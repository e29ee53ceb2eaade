"""The runtime's services: one task each, never one per run.

- ``lease_service`` extends every lease this runtime holds with one statement
  (every ``lease_seconds / 3``) and, every second, sweeps for ``running`` runs
  whose owner is gone or that nobody hosts yet (replays, retries, runs left
  for workers) and for messages that arrived while another owner, perhaps a
  dead one, held their run;
- ``timer_service`` sleeps until the store's next deadline of an evicted run
  (a sleep's end, a wait's timeout) and rehydrates the runs that are due; a
  store with ``claim_due`` (PostgreSQL) finds and leases them in one statement,
  so workers sharing the store split the due runs instead of racing for them;
- ``wake_service`` notices messages written by other processes. A store with
  ``wait_for_change`` (PostgreSQL, through LISTEN/NOTIFY) wakes it when another
  process commits a message, with no polling; otherwise it asks the store for a
  change token every ``poll_interval`` (free when nothing changed). Either way,
  when something changed it fetches the messages that arrived since the last
  look, with one query.

Resident suspended flows do not need the timer service: their own wait holds
the deadline in memory.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import anyio

from .._errors import StorageError
from ..storage.base import AnnouncesRunnable, BulkClaims, SignalsChanges

if TYPE_CHECKING:
    from ._placement import Placement

__all__ = ("lease_service", "timer_service", "wake_service")

log = logging.getLogger("kitaru.timers")

#: Seconds between re-reads of the next deadline (another process may add an
#: earlier one); local changes kick the service at once.
_RESCAN = 5.0
_BATCH = 1000
#: Seconds before looking again at a deadline another worker was claiming.
_RETRY_DUE = 0.05
#: Seconds between sweeps for runs nobody hosts (leases are renewed less often).
_SWEEP = 1.0
#: Runs claimed per sweep before pausing for other workers.
_SWEEP_BATCH = 100
#: Batches per sweep at most (the rest waits for the next sweep).
_SWEEP_ROUNDS = 100


async def lease_service(placement: Placement) -> None:
    """Renew this runtime's leases and resume orphaned runs, forever."""
    renew_every = placement.config.lease_seconds / 3
    sweep_every = min(_SWEEP, renew_every)
    renewed = anyio.current_time()
    placement.sweep_kick = kick = anyio.Event()
    while True:
        with anyio.move_on_after(sweep_every):
            await kick.wait()  # a run was left for workers: sweep now
        # A fresh event before sweeping: a kick during the sweep (a run left
        # after it looked) must start the next one at once, not be lost.
        placement.sweep_kick = kick = anyio.Event()
        try:
            if anyio.current_time() - renewed >= renew_every - sweep_every / 2:
                await placement.store.renew_leases(
                    placement.owner, placement.clock.now() + placement.config.lease_seconds
                )
                renewed = anyio.current_time()
            # A full batch means more are waiting: take the next batch after a
            # pause that lets other workers take their share.
            for _ in range(_SWEEP_ROUNDS):
                if await placement.recover(limit=_SWEEP_BATCH) < _SWEEP_BATCH:
                    break
                await anyio.sleep(0.01)
            await placement.retry_stalled()
        except StorageError as exc:
            log.warning("lease renewal failed (%s); retrying in %.1f s", exc, sweep_every)


async def timer_service(placement: Placement) -> None:
    """Rehydrate evicted runs whose sleep ended or whose wait timed out."""
    store = placement.store
    clock = placement.clock
    woken: set[str] = set()
    while True:
        placement.timer_kick = kick = anyio.Event()
        try:
            flows = placement.flow_names
            now = clock.now()
            nxt = await store.next_wake(flows, now=now) if flows else None
            if nxt is not None and nxt <= now:
                due = await _wake_due(placement, flows, now)
                if due:
                    if due <= woken:
                        # The same runs again: they are live (here, or their lease
                        # looks lapsed) and about to act on it; do not spin.
                        await anyio.sleep(_RETRY_DUE)
                    woken = due
                    continue
                # Due but claimed by someone else this instant: look again shortly.
                nxt = now + _RETRY_DUE
        except StorageError as exc:
            log.warning("timer service: %s; retrying", exc)
            nxt = None
        target = clock.now() + _RESCAN if nxt is None else min(nxt, clock.now() + _RESCAN)
        if math.isfinite(target):
            await clock.sleep_until(target, kick)


async def _wake_due(placement: Placement, flows: list[str], now: float) -> set[str]:
    """Rehydrate the runs due at ``now``; the ids of those found."""
    store = placement.store
    if not isinstance(store, BulkClaims):
        ids = await store.due(flows, now=now, limit=_BATCH)
        for run_id in ids:
            await placement.wake(run_id)
        return set(ids)
    claimed = await store.claim_due(
        flows,
        placement.owner,
        now=now,
        lease_until=now + placement.config.lease_seconds,
        limit=_BATCH,
    )
    for record in claimed:
        placement.host_claimed(record)
    return {record.id for record in claimed}


async def wake_service(placement: Placement) -> None:
    """Deliver messages that other processes wrote to the store."""
    store = placement.store
    if isinstance(store, SignalsChanges):
        await _listen(placement, store)
        return
    seen_token: int | None = None
    last_id = 0
    while True:
        try:
            token = await store.change_token()
            if token != seen_token:
                seen_token = token
                last_id = await _deliver(placement, last_id)
        except StorageError as exc:
            log.warning("wake service: %s; retrying", exc)
        await anyio.sleep(placement.config.poll_interval)


async def _listen(placement: Placement, store: SignalsChanges) -> None:
    """The wake service of a store that signals other processes' commits."""
    seen_deadlines = store.deadline_token()
    runnable = store if isinstance(store, AnnouncesRunnable) else None
    seen_runnable = runnable.runnable_token() if runnable is not None else 0
    signal = 0
    last_id = 0
    fetch = True  # once at the start: messages may predate this runtime
    while True:
        try:
            if fetch:
                last_id = await _deliver(placement, last_id)
            # Returns at once on a signal; after poll_interval otherwise, with
            # the same token when nothing happened (then nothing is queried).
            new = await store.wait_for_change(signal, placement.config.poll_interval)
        except StorageError as exc:
            log.warning("wake service: %s; retrying", exc)
            await anyio.sleep(placement.config.poll_interval)
            continue
        fetch, signal = new != signal, new
        if store.deadline_token() != seen_deadlines:
            # Another process handed a deadline over: the timer service should look.
            seen_deadlines = store.deadline_token()
            placement.timer_kick.set()
        if runnable is not None and runnable.runnable_token() != seen_runnable:
            # Another process left a run for workers: the lease service sweeps now.
            seen_runnable = runnable.runnable_token()
            placement.sweep_kick.set()


async def _deliver(placement: Placement, last_id: int) -> int:
    """Wake the runs that got messages with ids above ``last_id``; the new ``last_id``."""
    store = placement.store
    while True:
        messages = await store.messages_after(last_id, limit=_BATCH)
        for message in messages:
            last_id = max(last_id, message.id)
            if message.id in placement.posted:
                placement.posted.discard(message.id)  # delivered when posted
                continue
            await placement.wake(message.run_id, message.topic)
        if len(messages) < _BATCH:
            break
    # Local ids at or below what the store has shown us were either
    # skipped above or consumed before we looked: forget them.
    placement.posted.difference_update([i for i in placement.posted if i <= last_id])
    return last_id
