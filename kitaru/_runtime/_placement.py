"""Placement: which runs this runtime hosts, and when it takes one on.

A run is hosted by at most one activation (the directory's map in this
process, the run's lease row across processes). The placement decides when
this runtime claims a run and starts an actor for it:

- at start-up and in every sweep, runs whose owner is gone or that nobody
  hosts yet (:meth:`Placement.recover`);
- when a message or a deadline arrives for a suspended run (:meth:`Placement.wake`);
- when a store that claims in bulk hands over due runs (:meth:`Placement.host_claimed`);
- runs whose message arrived while another owner held them, looked at again
  by the sweep (:meth:`Placement.retry_stalled`).
"""

from __future__ import annotations

import logging
import random
import uuid
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import ConfigurationError, FlowCancelled, RunFinished, RunNotFound
from ..actors._outcomes import Cancelled, Completed, Failed
from ..actors._supervisor import Supervisor
from ..journal._suspend import check_against_wait
from ..storage.base import ACTIVE_STATUSES, AnnouncesRunnable, BulkClaims, Message, RunRecord
from ..storage.serde import codec_for
from ._flows import FlowTable, check_flow
from ._inspect import failure, load_output

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskGroup

    from .._clock import Clock
    from .._config import RuntimeConfig
    from .._types import Budget
    from ..actors._directory import Directory
    from ..actors._flow_actor import FlowActor
    from ..journal._host import HostedFlow
    from ..storage.base import ArtifactStore, RunStore
    from ._event_bus import EventBus

__all__ = ("Placement",)

log = logging.getLogger("kitaru.runtime")

#: Claims ``recover`` keeps in flight at once (below PostgreSQL's default pool of 10).
_CLAIMS_IN_FLIGHT = 8
#: Bound on runs remembered by ``retry_stalled``.
_STALLED_MAX = 100_000
#: Bound on remembered local message ids (beyond it, the wake service merely
#: pokes some runs twice, which is harmless).
POSTED_MAX = 100_000


class Placement:
    """Claims runs for one open runtime and hosts them (the ``Host`` their flows see).

    It owns the runtime's supervisor (which starts the actors in
    ``task_group``) and is what their flows' durable calls see of the runtime.
    """

    def __init__(
        self,
        store: RunStore,
        config: RuntimeConfig,
        clock: Clock,
        directory: Directory[FlowActor],
        flows: FlowTable,
        artifacts: ArtifactStore,
        events: EventBus,
        task_group: TaskGroup,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._artifacts = artifacts
        self._events = events
        #: ``run_id`` changed in the store: wake whoever watches it live (the
        #: event bus's own method, so a checkpoint's commit pays one call).
        self.touch: Callable[[str], None] = events.touch
        self._directory = directory
        self._flows = flows
        self.supervisor = Supervisor(self, task_group, directory)
        #: Set to make the timer service look at the store's deadlines again.
        self.timer_kick = anyio.Event()
        #: Set to make the lease service sweep for runs nobody hosts at once.
        self.sweep_kick = anyio.Event()
        #: Runs being claimed for a wake-up right now: one waker at a time, so
        #: a stale read can never start a second activation of a run.
        self._waking: set[str] = set()
        #: Ids of messages this runtime posted and already delivered, so the
        #: wake service does not deliver them a second time.
        self.posted: set[int] = set()
        #: Runs whose message arrived while another owner held their lease:
        #: run id -> topic, looked at again by the sweep (see retry_stalled).
        self._stalled: dict[str, str] = {}
        #: Runs the supervisor gave up on while they are still leased to us.
        self._given_up: set[str] = set()

    @property
    def owner(self) -> str:
        """This runtime's lease-owner id."""
        return self._directory.owner

    # -- what a running flow needs of its host (journal.Host) ----------------
    def artifacts(self) -> ArtifactStore:
        """The artifact store (opened on first use)."""
        return self._artifacts

    def flow_budget(self, flow: str) -> Budget | None:
        """The budget of flow ``flow`` when this runtime hosts it."""
        known = self._flows.get(flow)
        return None if known is None else known.budget

    async def run_child(
        self,
        flow: HostedFlow,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str,
        parent: str,
    ) -> Any:
        """Start (or find) child run ``run_id`` of ``parent`` here and return its output."""
        child = await self.start(
            flow, args, kwargs, run_id=run_id, parent=parent, budget=None, host=True
        )
        return await self.result(child)

    def kick_timers(self) -> None:
        """Make the timer service look at the store's deadlines again."""
        self.timer_kick.set()

    @property
    def flow_names(self) -> list[str]:
        """Names of the flows this runtime can host."""
        return list(self._flows)

    async def start(
        self,
        flow: HostedFlow,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None,
        parent: str | None,
        budget: Budget | None,
        host: bool,
    ) -> str:
        """Create a run (leased here and hosted, or, with ``host=False``, left for workers).

        Starting a run id that exists returns it, resuming it here if nobody hosts it.
        """
        if host:
            newly_known = self._flows.register(flow)
        else:
            check_flow(flow)
            newly_known = False
        data = flow.encode_input(args, kwargs)
        now = self.clock.now()
        record = RunRecord(
            id=run_id or uuid.uuid4().hex,
            flow=flow.name,
            status="running",
            created_at=now,
            updated_at=now,
            input=data,
            owner=self.owner if host else None,
            lease_until=now + self.config.lease_seconds if host else None,
            parent_id=parent,
            budget=None if budget is None else budget.to_json(),
        )
        stored, created = await self.store.create_run(record)
        if created:
            self._events.touch(stored.id)
            if host:
                self.activate(stored, (args, kwargs))
            else:
                await self.announce_runnable()
        elif stored.flow != flow.name:
            raise ConfigurationError(
                f"run id {stored.id!r} already belongs to flow {stored.flow!r}, not "
                f"{flow.name!r}; choose another run id"
            )
        elif host:
            await self.resume(stored)
        if newly_known:
            await self.recover()
        return stored.id

    async def send(
        self,
        run_id: str,
        value: Any,
        *,
        topic: str = "input",
        key: str | None = None,
        sender: str | None = None,
    ) -> int:
        """``rt.send``: check, store, and deliver (poke or rehydrate) a message."""
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        if record.status not in ACTIVE_STATUSES:
            if key is not None:
                accepted = await self.store.message_with_key(run_id, key)
                if accepted is not None:
                    # Sent before (a retried webhook, a send whose sender died
                    # before recording it): delivered once, so this succeeds.
                    return accepted.id
            raise RunFinished(
                f"run {run_id} is {record.status}; it accepts no more messages "
                "(start a new run, or replay this one)"
            )
        payload = codec_for(Any).dump(value, what=f"message to run {run_id}")
        check_against_wait(record, topic, payload)
        message, created = await self.store.post(
            Message(0, run_id, topic, payload, self.clock.now(), sender=sender, key=key)
        )
        if created:
            if len(self.posted) < POSTED_MAX:
                self.posted.add(message.id)
            await self.wake(run_id, topic, record)
        return message.id

    async def result(self, run_id: str) -> Any:
        """``rt.result``: the outcome of a run that finished here, else the store's."""
        delay = 0.02
        supervisor = self.supervisor
        while True:
            actor = self._directory.live.get(run_id)
            outcome = supervisor.recent.get(run_id)
            if actor is not None or outcome is not None:
                if actor is not None:
                    await actor.done.wait()
                    outcome = actor.outcome
                if isinstance(outcome, Completed):
                    return outcome.value
                if isinstance(outcome, Failed):
                    record = await self.store.get_run(run_id)
                    raise failure(run_id, record, outcome.error)
                if isinstance(outcome, Cancelled):
                    raise FlowCancelled(run_id)
                continue  # gave up or stopped: look at the store
            record = await self.store.get_run(run_id)
            if record is None:
                raise RunNotFound(run_id)
            if record.status == "completed":
                return await load_output(record, self._artifacts, self._flows)
            if record.status == "failed":
                raise failure(run_id, record, None)
            if record.status == "cancelled":
                raise FlowCancelled(run_id)
            if await self.resume(record):
                continue
            # Suspended, hosted elsewhere, or its flow is unknown here: watch
            # for runs finishing here, and the store now and then.
            with anyio.move_on_after(delay):
                await supervisor.finished.wait()
            delay = min(delay * 2, 1.0)

    def is_live(self, run_id: str) -> bool:
        """True when ``run_id`` has a live actor here."""
        return run_id in self._directory.live

    async def recover(self, limit: int = 1000) -> int:
        """Resume runs of known flows whose owner is gone; returns how many.

        At most ``limit`` runs are claimed per call. A store that can claim
        them in one statement (PostgreSQL, skipping rows other workers are
        claiming) does; otherwise they are claimed in random order, several
        at a time, so workers sweeping at the same moment share a burst of
        new runs instead of the first one taking them all.
        """
        if not self._flows:
            return 0
        store = self.store
        dead = self._directory.dead_among(await store.owners())
        for owner in dead:
            # Their runs become free for everyone: suspended ones then wake on
            # messages and deadlines like any evicted run.
            await store.release(owner)
        if dead:
            # Some of those may be overdue already (a sleep that ended while
            # their process was dead): the timer service looks now, not at its
            # next rescan.
            self.timer_kick.set()
        now = self.clock.now()
        lease_until = now + self.config.lease_seconds
        flows = list(self._flows)
        resumed = 0

        def host(record: RunRecord | None) -> None:
            nonlocal resumed
            if record is not None and record.id not in self._directory.live:
                log.info("resuming run %s of flow %s", record.id, record.flow)
                self.activate(record)
                resumed += 1

        # Runs given up on after store failures are still leased to us.
        for run_id in list(self._given_up):
            record = await store.claim(
                run_id, self.owner, now=now, lease_until=lease_until, dead_owners=[self.owner]
            )
            self._given_up.discard(run_id)
            host(record)
        if isinstance(store, BulkClaims):
            claimed = await store.claim_orphans(
                flows, self.owner, now=now, lease_until=lease_until, dead_owners=dead, limit=limit
            )
            for record in claimed:
                host(record)
            return resumed
        ids = await store.orphans(flows, now=now, dead_owners=dead)
        random.shuffle(ids)
        ids = [run_id for run_id in ids if run_id not in self._directory.live][:limit]

        async def claim(run_id: str) -> None:
            async with limiter:
                record = await store.claim(
                    run_id, self.owner, now=now, lease_until=lease_until, dead_owners=dead
                )
            host(record)

        # Claims are independent round trips: several in flight at once, so a
        # burst of new or orphaned runs starts in a fraction of the serial time.
        limiter = anyio.CapacityLimiter(_CLAIMS_IN_FLIGHT)
        async with anyio.create_task_group() as tg:
            for run_id in ids:
                tg.start_soon(claim, run_id)
        return resumed

    def gave_up(self, run_id: str) -> None:
        """The supervisor stopped restarting ``run_id`` (store failures): resume it later."""
        self._given_up.add(run_id)

    def activate(
        self,
        record: RunRecord,
        live_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        """Host ``record``'s run here (it is leased to this runtime)."""
        self.supervisor.activate(record, self._flows[record.flow], live_args)

    async def resume(self, record: RunRecord) -> bool:
        """Claim and host an active run that nobody live hosts; True if hosted here."""
        if record.id in self._directory.live:
            return True
        if record.status != "running":
            return False  # suspended runs wake on a message or a deadline, not here
        claimed = await self.claim_unhosted(record)
        if claimed is None:
            return False
        self.activate(claimed)
        return True

    async def claim_unhosted(self, record: RunRecord) -> RunRecord | None:
        """Claim an active run of a known flow that nobody live hosts; None if taken."""
        if record.flow not in self._flows or record.status not in ACTIVE_STATUSES:
            return None
        now = self.clock.now()
        dead = [record.owner] if record.owner and self._directory.dead_among([record.owner]) else []
        return await self.store.claim(
            record.id,
            self.owner,
            now=now,
            lease_until=now + self.config.lease_seconds,
            dead_owners=dead,
        )

    async def announce_runnable(self) -> None:
        """A run was left for any host of its flow: tell the workers to sweep now."""
        if isinstance(self.store, AnnouncesRunnable):
            await self.store.announce_runnable()  # other processes (PostgreSQL NOTIFY)
        self.sweep_kick.set()  # this one, in case it hosts the flow

    def host_claimed(self, record: RunRecord) -> None:
        """Host a run this runtime has just leased (``store.claim_due``), or poke it if live."""
        actor = self._directory.live.get(record.id)
        if actor is not None:
            actor.poke()  # e.g. still leaving after an eviction: it rehydrates instead
        elif record.flow in self._flows:
            self.activate(record)

    async def wake(
        self, run_id: str, topic: str | None = None, record: RunRecord | None = None
    ) -> None:
        """Something arrived for ``run_id``: poke its actor, or rehydrate it here.

        ``topic`` is the message's topic (``None`` for a deadline); ``record``
        saves a read when the caller has just read the run.
        """
        actor = self._directory.live.get(run_id)
        if actor is not None:
            actor.poke()
            return
        if run_id in self._waking:
            return  # another waker is claiming it; the activation reads the store
        self._waking.add(run_id)
        try:
            if record is None or not _wants(record, topic):
                # The caller's copy may predate the run's suspension (a flow that
                # evicted itself while the message was being posted): read again.
                record = await self.store.get_run(run_id)
            if record is None or not _wants(record, topic):
                return  # running (it reads its mailbox), finished, or a later wait's message
            claimed = await self.claim_unhosted(record)
            if claimed is None:
                if topic is not None and record.flow in self._flows:
                    self._remember_stalled(run_id, topic)
            elif run_id not in self._directory.live:
                self._stalled.pop(run_id, None)
                self.activate(claimed)
        finally:
            self._waking.discard(run_id)

    def _remember_stalled(self, run_id: str, topic: str) -> None:
        # Another owner holds the run: it consumes the message if it is alive;
        # if it died, its lease has to lapse first. Look again in the sweep.
        if len(self._stalled) < _STALLED_MAX:
            self._stalled[run_id] = topic

    async def retry_stalled(self) -> int:
        """Wake again the runs whose message arrived while another owner held them.

        A run drops out once it no longer waits for that message (consumed
        by its owner, or the run moved on); it is hosted here once its
        owner's lease lapsed. Returns how many runs are still waiting for it.
        """
        for run_id, topic in list(self._stalled.items()):
            record = await self.store.get_run(run_id)
            if (
                record is None
                or record.status not in ("waiting", "sleeping")
                or topic not in (record.wait_topics or "").split(",")
                or await self.store.next_message(run_id, topic) is None
            ):
                self._stalled.pop(run_id, None)
                continue
            await self.wake(run_id, topic, record)
        return len(self._stalled)


def _wants(record: RunRecord, topic: str | None) -> bool:
    """True if ``record`` is suspended and a message on ``topic`` (or a deadline) wakes it."""
    if record.status not in ("waiting", "sleeping"):
        return False
    return topic is None or topic in (record.wait_topics or "").split(",")
