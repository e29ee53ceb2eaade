"""The supervisor: starts flow actors, bounds them, restarts them, records failures.

A flow's own exception is the flow's business: the run becomes ``failed`` with
the error stored. An infrastructure failure (the store went away) is not: the
run is restarted from its journal after a backoff, at most ``max_restarts``
times per ``restart_window`` seconds; past that it is left for recovery (its
lease lapses, so this or another worker resumes it once the store is back).

Residency: at most ``max_live_runs`` runs execute at once (a suspended flow
gives its slot back while it waits), and at most ``max_resident`` suspended
flows stay in memory; beyond that the least recently active one is evicted.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .._errors import StorageError
from ..journal._host import Host
from ..storage.base import RunPatch
from ._flow_actor import FlowActor
from ._outcomes import ContinuedAsNew, Evicted, Infra, Outcome

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ..journal._host import HostedFlow
    from ..storage.base import RunRecord
    from ._directory import Directory

__all__ = ("ActorHost", "Supervisor")

log = logging.getLogger("kitaru.supervisor")
_RECENT = 1024
_SUSPENDED = ("waiting", "sleeping")


class ActorHost(Host, Protocol):
    """What the supervisor needs of its host beyond what a running flow does."""

    def claim_unhosted(self, record: RunRecord) -> Awaitable[RunRecord | None]:
        """Lease an active run nobody live hosts; ``None`` if someone else has it."""
        ...

    def gave_up(self, run_id: str) -> None:
        """The supervisor stopped restarting ``run_id``: resume it in a later sweep."""
        ...

    def kick_timers(self) -> None:
        """A deadline changed hands: the timer service should look at the store again."""
        ...


class Supervisor:
    """Owns the flow actors of one runtime."""

    def __init__(
        self, host: ActorHost, task_group: TaskGroup, directory: Directory[FlowActor]
    ) -> None:
        self._host = host
        self._tg = task_group
        self._directory = directory
        config = host.config
        #: Limits worker threads for plain-``def`` flow bodies; separate from
        #: anyio's default pool so sync checkpoints always find a thread.
        self.flow_threads = anyio.CapacityLimiter(config.sync_flow_threads)
        self._slots = anyio.Semaphore(config.max_live_runs)
        self._max_restarts = config.max_restarts
        self._window = config.restart_window
        self._backoff = config.restart_backoff
        self._max_resident = config.max_resident
        #: Suspended resident actors, least recently active first.
        self._idle: OrderedDict[str, FlowActor] = OrderedDict()
        #: How many restarts happened for infrastructure failures (metrics, tests).
        self.restarts = 0
        #: How many evictions user code swallowed (it caught BaseException).
        self.swallowed_evictions = 0
        #: How many times a suspended flow was evicted.
        self.evictions = 0
        #: Outcomes of runs that finished here lately, so a caller that awaits a
        #: result just after the run ended still gets the live value or the
        #: original exception (bounded: older ones are read from the store).
        self.recent: OrderedDict[str, Outcome] = OrderedDict()
        #: Set when any run finished here; ``result()`` waiters re-check on it.
        self.finished = anyio.Event()

    def activate(
        self,
        record: RunRecord,
        flow: HostedFlow,
        live_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> FlowActor:
        """Host ``record``'s run here unless it already is; return its actor."""
        live = self._directory.live
        actor = live.get(record.id)
        if actor is None:
            actor = FlowActor(self._host, self, record, flow, live_args)
            live[record.id] = actor
            self._tg.start_soon(self._supervise, actor, name=f"kitaru run {record.id}")
        return actor

    @property
    def resident(self) -> int:
        """Suspended runs still in memory (idle, waiting for a wake-up)."""
        return len(self._idle)

    def is_resident(self, run_id: str) -> bool:
        """True while ``run_id`` is suspended and still in memory."""
        return run_id in self._idle

    # -- residency ---------------------------------------------------------
    def idle(self, actor: FlowActor) -> None:
        """``actor`` suspended: give back its slot, evict the LRU idle one if over budget."""
        if actor.holds_slot:
            actor.holds_slot = False
            self._slots.release()
        self._idle[actor.run_id] = actor
        self._idle.move_to_end(actor.run_id)
        while len(self._idle) > self._max_resident:
            _, oldest = self._idle.popitem(last=False)
            oldest.request_eviction()

    def release_slot(self, actor: FlowActor) -> None:
        """``actor`` awaits another run (a child flow): give its execution slot back."""
        if actor.holds_slot:
            actor.holds_slot = False
            self._slots.release()

    def busy_again(self, actor: FlowActor) -> None:
        """``actor`` woke up."""
        self._idle.pop(actor.run_id, None)

    async def reacquire(self, actor: FlowActor) -> None:
        """Take an execution slot again after a suspension."""
        await self._slots.acquire()
        actor.holds_slot = True

    # -- supervision -------------------------------------------------------
    async def _supervise(self, actor: FlowActor) -> None:
        restarts: deque[float] = deque()
        outcome: Outcome | None = None
        try:
            while True:
                await self._slots.acquire()
                actor.holds_slot = True
                try:
                    outcome = await actor.execute()
                finally:
                    if actor.holds_slot:
                        actor.holds_slot = False
                        self._slots.release()
                    self._idle.pop(actor.run_id, None)
                if isinstance(outcome, ContinuedAsNew):
                    continue
                if isinstance(outcome, Evicted):
                    if await self._evicted(actor):
                        continue  # a message raced the eviction: rehydrate now
                    outcome = None
                    break
                if not isinstance(outcome, Infra):
                    break
                now = time.monotonic()
                while restarts and now - restarts[0] > self._window:
                    restarts.popleft()
                if len(restarts) >= self._max_restarts:
                    log.error(
                        "run %s: giving up after %d restarts in %.0f s; last error: %s. "
                        "It is resumed by the next sweep that finds the store working "
                        "(here, or by another worker once its lease lapses).",
                        actor.run_id,
                        len(restarts),
                        self._window,
                        outcome.error,
                    )
                    self._host.gave_up(actor.run_id)
                    outcome = None
                    break
                restarts.append(now)
                self.restarts += 1
                delay = self._backoff * 2 ** (len(restarts) - 1)
                log.warning(
                    "run %s: infrastructure failure (%s); restarting from its journal in %.2f s",
                    actor.run_id,
                    outcome.error,
                    delay,
                )
                await anyio.sleep(delay)
        finally:
            actor.outcome = outcome
            if outcome is not None:
                self.recent[actor.run_id] = outcome
                if len(self.recent) > _RECENT:
                    self.recent.popitem(last=False)
                self.finished.set()
                self.finished = anyio.Event()
            live = self._directory.live
            if live.get(actor.run_id) is actor:
                del live[actor.run_id]
            actor.done.set()
            self._host.touch(actor.run_id)

    async def _evicted(self, actor: FlowActor) -> bool:
        """Give up the lease of an evicted run; True if it must be rehydrated at once."""
        self.evictions += 1
        store = self._host.store
        patch = RunPatch(
            actor.run_id, updated_at=self._host.clock.now(), release=True, expect=_SUSPENDED
        )
        try:
            with anyio.CancelScope(shield=True):
                record = await store.update_run(patch)
        except StorageError as exc:
            log.warning("run %s: could not release its lease after eviction: %s", actor.run_id, exc)
            return False
        self._host.kick_timers()  # its deadline is the timer service's now
        if record is None or not actor.poked or actor.cancel_requested:
            return False
        claimed = await self._host.claim_unhosted(record)
        if claimed is None:
            return False
        actor.record = claimed
        return True
