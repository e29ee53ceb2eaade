"""The runtime: an async context manager that hosts flows.

It opens, in order, the run store, the (lazy) artifact store and one task group
that owns every actor and service; leaving it cancels them, lets in-flight
commits finish (they are shielded), releases this runtime's leases so another
runtime can resume its runs at once, and closes the stores in reverse order.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import random
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ._budget import BudgetLike, as_budget
from ._clock import Clock, SystemClock
from ._config import RuntimeConfig, resolve_config
from ._context import runtime_var
from ._errors import (
    ConfigurationError,
    FlowCancelled,
    FlowFailed,
    ReplayError,
    RunFinished,
    RunNotFound,
    RuntimeStateError,
)
from ._event_bus import EventBus
from ._flow import Flow
from ._inspect import run_info
from ._replay import CheckpointRef, Overrides, plan_replay, retry_entries
from ._types import RunHandle, RunInfo, RunStatus
from .actors._directory import Directory
from .actors._flow_actor import Cancelled, Completed, Failed
from .actors._mailbox import check_against_wait
from .actors._supervisor import Supervisor
from .actors._timers import lease_service, timer_service, wake_service
from .storage._lazy import LazyArtifacts
from .storage._registry import open_store
from .storage.base import ACTIVE_STATUSES, Message, RunPatch, RunRecord, RunStore
from .storage.serde import codec_for, loads_plain

__all__ = ("Runtime", "runtime")

log = logging.getLogger("kitaru.runtime")

#: Claims ``recover`` keeps in flight at once (below PostgreSQL's default pool of 10).
_CLAIMS_IN_FLIGHT = 8


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Runtime:
    """Hosts flows; create it with :func:`kitaru.runtime`."""

    def __init__(
        self,
        config: RuntimeConfig,
        flows: Sequence[Flow[Any, Any]] = (),
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._state = _State.UNOPENED
        self._flows: dict[str, Flow[Any, Any]] = {}
        for f in flows:
            self._register(f)
        self._directory = Directory()
        self._store: RunStore | None = None
        self._artifacts = LazyArtifacts(config.artifacts)
        self._tg: TaskGroup | None = None
        self._supervisor: Supervisor | None = None
        self._token: Any = None
        #: Limits worker threads for plain-``def`` flow bodies; separate from
        #: anyio's default pool so sync checkpoints always find a thread.
        self.flow_threads = anyio.CapacityLimiter(config.sync_flow_threads)
        self.clock: Clock = clock or SystemClock()
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
        #: Tells live views (the HTTP API's events) that a run changed here.
        self.events = EventBus()

    # -- lifecycle ---------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        if self._state is not _State.UNOPENED:
            raise RuntimeStateError(
                f"this runtime is {self._state.value}; a runtime can be entered once. "
                "Create a new one with kitaru.runtime(...)"
            )
        self._store = await open_store(self.config.store)
        try:
            self._directory.open()
            tg = self._tg = anyio.create_task_group()
            await tg.__aenter__()
        except BaseException:
            await self._store.aclose()
            raise
        self._supervisor = Supervisor(self, tg, self._directory)
        self._state = _State.OPEN
        self._token = runtime_var.set(self)
        tg.start_soon(lease_service, self, name="kitaru lease service")
        tg.start_soon(wake_service, self, name="kitaru wake service")
        tg.start_soon(timer_service, self, name="kitaru timer service")
        await self.recover()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        assert self._store is not None
        self._state = _State.CLOSED
        try:
            runtime_var.reset(self._token)
        except ValueError:  # exited from another context than it was entered in
            pass
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    await self._store.release(self.owner)
                except Exception as err:
                    log.warning("could not release leases on close: %s", err)
                await self._store.aclose()
                await self._artifacts.aclose()
            self._directory.close()

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise RuntimeStateError(
                f"the runtime is {self._state.value}; use it inside "
                "`async with kitaru.runtime() as rt:`"
            )

    @property
    def store(self) -> RunStore:
        """The run store (open while the runtime is)."""
        if self._store is None:
            raise RuntimeStateError("the runtime is not open; enter it with `async with`")
        return self._store

    def artifacts(self) -> LazyArtifacts:
        """The artifact store, opened on first use."""
        return self._artifacts

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of this runtime's actors (open runtimes only)."""
        if self._supervisor is None:
            raise RuntimeStateError("the runtime is not open; enter it with `async with`")
        return self._supervisor

    @property
    def flow_names(self) -> list[str]:
        """Names of the flows this runtime can host."""
        return list(self._flows)

    @property
    def owner(self) -> str:
        """This runtime's lease-owner id."""
        return self._directory.owner

    # -- flows -------------------------------------------------------------
    def _register(self, flow: Flow[Any, Any]) -> bool:
        _check_flow(flow)
        known = self._flows.get(flow.name)
        if known is None:
            self._flows[flow.name] = flow
            return True
        if known is not flow and known.fn.__qualname__ != flow.fn.__qualname__:
            raise ConfigurationError(
                f"two different flows are named {flow.name!r} ({known.fn.__qualname__} and "
                f"{flow.fn.__qualname__}); give one another name with @flow(name=...)"
            )
        return False

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
        now = self.clock.now()
        lease_until = now + self.config.lease_seconds
        flows = list(self._flows)
        resumed = 0

        def host(record: RunRecord | None) -> None:
            nonlocal resumed
            if record is not None and record.id not in self._directory.live:
                log.info("resuming run %s of flow %s", record.id, record.flow)
                self._activate(record)
                resumed += 1

        # Runs given up on after store failures are still leased to us.
        for run_id in list(self._given_up):
            record = await store.claim(
                run_id, self.owner, now=now, lease_until=lease_until, dead_owners=[self.owner]
            )
            self._given_up.discard(run_id)
            host(record)
        claim_orphans = getattr(store, "claim_orphans", None)
        if claim_orphans is not None:
            claimed: list[RunRecord] = await claim_orphans(
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

    def _activate(
        self,
        record: RunRecord,
        live_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        assert self._supervisor is not None
        self._supervisor.activate(record, self._flows[record.flow], live_args)

    async def _resume(self, record: RunRecord) -> bool:
        """Claim and host an active run that nobody live hosts; True if hosted here."""
        if record.id in self._directory.live:
            return True
        if record.status != "running":
            return False  # suspended runs wake on a message or a deadline, not here
        claimed = await self.claim_unhosted(record)
        if claimed is None:
            return False
        self._activate(claimed)
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

    async def _announce_runnable(self) -> None:
        """A run was left for any host of its flow: tell the workers to sweep now."""
        announce = getattr(self.store, "announce_runnable", None)
        if announce is not None:
            await announce()  # other processes (PostgreSQL NOTIFY)
        self.sweep_kick.set()  # this one, in case it hosts the flow

    def host_claimed(self, record: RunRecord) -> None:
        """Host a run this runtime has just leased (``store.claim_due``), or poke it if live."""
        actor = self._directory.live.get(record.id)
        if actor is not None:
            actor.poke()  # e.g. still leaving after an eviction: it rehydrates instead
        elif record.flow in self._flows:
            self._activate(record)

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
                self._activate(claimed)
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

    # -- public API ----------------------------------------------------------
    async def start(
        self,
        flow: Flow[Any, Any],
        /,
        *args: Any,
        run_id: str | None = None,
        budget: BudgetLike | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Start a run of ``flow`` and return its handle.

        Starting with a ``run_id`` that exists returns that run (resuming it
        here if it is unfinished and nobody hosts it) and executes nothing twice.
        ``budget`` (a :class:`kitaru.Budget` or a dict) limits what this run may
        spend on LLM calls; it is stored with the run, so it holds across
        restarts, and it wins over the flow's and the runtime's.

        Raises:
            TypeError: the arguments do not fit the flow's signature (nothing is stored).
            kitaru.SerializationError: an argument cannot be stored as its annotation.
        """
        return await self._start(flow, args, kwargs, run_id=run_id, budget=budget)

    async def submit(
        self,
        flow: Flow[Any, Any],
        /,
        *args: Any,
        run_id: str | None = None,
        budget: BudgetLike | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Create a run of ``flow`` for a worker to execute; return its handle.

        Like :meth:`start`, but the run is stored with no owner and is not
        executed here (unless this runtime hosts ``flow`` too): any runtime
        hosting the flow (``kitaru worker``, ``kitaru.runtime(flows=[...])``)
        takes it. On PostgreSQL the workers are notified at once; otherwise
        they find it in their next sweep (every second). This is how an API
        service hands work to a pool of workers; ``await handle.result()``
        still waits for the outcome, reading it from the store.

        Submitting with a ``run_id`` that exists returns that run and changes nothing.

        Raises:
            TypeError: the arguments do not fit the flow's signature (nothing is stored).
            kitaru.SerializationError: an argument cannot be stored as its annotation.
        """
        return await self._start(flow, args, kwargs, run_id=run_id, budget=budget, host=False)

    async def _start(
        self,
        flow: Flow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None = None,
        parent: str | None = None,
        budget: BudgetLike | None = None,
        host: bool = True,
    ) -> RunHandle:
        self._check_open()
        own_budget = as_budget(budget, f"rt.{'start' if host else 'submit'}(budget=...)")
        if host:
            newly_known = self._register(flow)
        else:
            _check_flow(flow)
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
            budget=None if own_budget is None else own_budget.to_json(),
        )
        stored, created = await self.store.create_run(record)
        if created:
            self.events.touch(stored.id)
            if host:
                self._activate(stored, (args, kwargs))
            else:
                await self._announce_runnable()
        elif stored.flow != flow.name:
            raise ConfigurationError(
                f"run id {stored.id!r} already belongs to flow {stored.flow!r}, not "
                f"{flow.name!r}; choose another run id"
            )
        elif host:
            await self._resume(stored)
        if newly_known:
            await self.recover()
        return RunHandle._make(stored.id, self)

    async def result(self, run_id: str) -> Any:
        """Wait for the run to finish and return its output.

        Raises:
            kitaru.FlowFailed: the run failed (``kitaru.FlowCancelled`` if cancelled).
            kitaru.RunNotFound: no such run.
        """
        self._check_open()
        delay = 0.02
        assert self._supervisor is not None
        while True:
            actor = self._directory.live.get(run_id)
            outcome = self._supervisor.recent.get(run_id)
            if actor is not None or outcome is not None:
                if actor is not None:
                    await actor.done.wait()
                    outcome = actor.outcome
                if isinstance(outcome, Completed):
                    return outcome.value
                if isinstance(outcome, Failed):
                    record = await self.store.get_run(run_id)
                    raise self._failure(run_id, record, outcome.error)
                if isinstance(outcome, Cancelled):
                    raise FlowCancelled(run_id)
                continue  # gave up or stopped: look at the store
            record = await self.store.get_run(run_id)
            if record is None:
                raise RunNotFound(run_id)
            if record.status == "completed":
                return await self._output(record)
            if record.status == "failed":
                raise self._failure(run_id, record, None)
            if record.status == "cancelled":
                raise FlowCancelled(run_id)
            if await self._resume(record):
                continue
            # Suspended, hosted elsewhere, or its flow is unknown here: watch
            # for runs finishing here, and the store now and then.
            with anyio.move_on_after(delay):
                await self.supervisor.finished.wait()
            delay = min(delay * 2, 1.0)

    def _failure(
        self, run_id: str, record: RunRecord | None, original: BaseException | None
    ) -> FlowFailed:
        info = loads_plain(record.error_info) if record is not None else None
        info = info or {}
        return FlowFailed(
            run_id,
            record.error if record is not None and record.error else str(original),
            error_type=info.get("type"),
            traceback=info.get("traceback"),
            original=original,
        )

    async def _output(self, record: RunRecord) -> Any:
        data = record.output
        if data is None and record.output_ref is not None:
            data = await self._artifacts.get(record.output_ref)
        if data is None:
            return None
        flow = self._flows.get(record.flow)
        if flow is None:
            return json.loads(data)
        return flow.output_codec.load(data, what=f"output of run {record.id}")

    async def get_run(self, run_id: str) -> RunInfo:
        """Everything known about a run.

        Raises:
            kitaru.RunNotFound: no such run.
        """
        self._check_open()
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return await run_info(self, record)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 100,
        before: str | None = None,
        journal: bool = True,
    ) -> list[RunInfo]:
        """Runs matching the filters, newest first (``status`` is a RunStatus value).

        ``before`` pages: pass the id of the last run of the previous page.
        ``journal=False`` gives summaries: ``checkpoints`` and ``artifacts``
        are left empty and ``checkpoint_count`` is filled, with one query for
        the whole page instead of reading every run's journal.
        """
        self._check_open()
        if status is not None:
            status = RunStatus(status).value
        records = await self.store.list_runs(status=status, flow=flow, limit=limit, before=before)
        if not journal:
            counts = await self.store.journal_counts([r.id for r in records])
            return [await run_info(self, r, counts.get(r.id, 0)) for r in records]
        return [await run_info(self, r) for r in records]

    async def send(
        self,
        run_id: str,
        value: Any,
        *,
        topic: str = "input",
        key: str | None = None,
        sender: str | None = None,
    ) -> int:
        """Put ``value`` in a run's mailbox on ``topic``; returns the message id.

        If the run is waiting on ``topic``, the value is checked against the
        wait's schema first. A ``key`` makes the send idempotent: a second send
        with the same key for the run is accepted and dropped (a retried
        webhook delivers once). Each message is consumed by exactly one wait;
        messages on one topic are consumed in the order accepted; a message that
        arrives before the flow waits on its topic is kept for that wait.

        Raises:
            kitaru.InvalidMessage: the value does not fit the pending wait's schema
                (nothing is stored).
            kitaru.RunNotFound: no such run.
            kitaru.RunFinished: the run has finished and takes no more messages.
        """
        self._check_open()
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        if record.status not in ACTIVE_STATUSES:
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
            if len(self.posted) < _POSTED_MAX:
                self.posted.add(message.id)
            await self.wake(run_id, topic, record)
        return message.id

    async def find_run(self, prefix: str) -> str:
        """The full id of the run whose id is ``prefix`` or starts with it.

        Raises:
            kitaru.RunNotFound: no run matches, or several do (the message lists some).
        """
        self._check_open()
        if not prefix:
            raise RunNotFound(prefix, "an empty run id matches every run; give a run id")
        if await self.store.get_run(prefix) is not None:
            return prefix
        found = await self.store.find_runs(prefix, limit=6)
        if len(found) == 1:
            return found[0]
        if not found:
            raise RunNotFound(prefix)
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise RunNotFound(
            prefix, f"run id prefix {prefix!r} is ambiguous ({shown}); give more characters"
        )

    async def replay(
        self,
        run_id: str,
        from_checkpoint: CheckpointRef | None = None,
        overrides: Overrides | None = None,
    ) -> RunHandle:
        """Start a new run that reuses ``run_id``'s journal up to ``from_checkpoint``.

        The new run (``RunInfo.replay_of`` names the original) gets the
        original's input and the journal entries before ``from_checkpoint``,
        which return their recorded values without running; from there it
        executes live, with the flow's current code. This is the remedy for a
        bug at step 9 (fix it, replay from step 9: steps 1-8 are not paid for
        again) and for :class:`kitaru.NonDeterminismError` (replay from a point
        before the divergence).

        Args:
            run_id: the run to replay (it may be in any status).
            from_checkpoint: where to go live: a checkpoint name (its first
                call), ``"name#N"`` (its N-th call) or a journal position.
                Default: right after the last overridden checkpoint, or the
                start when nothing is overridden.
            overrides: recorded values to replace, keyed like ``from_checkpoint``;
                each is validated against the checkpoint's return type.

        Returns:
            The new run's handle. It runs here if this runtime hosts the flow,
            else in any worker that does.

        Raises:
            kitaru.RunNotFound: no such run.
            kitaru.ReplayError: a checkpoint is not in the journal, an override
                does not fit, or is at or after the replay point (nothing is created).
        """
        self._check_open()
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        journal = await self.store.load_journal(run_id)
        plan = plan_replay(
            journal,
            run_id=run_id,
            from_checkpoint=from_checkpoint,
            overrides=overrides or {},
            inline_threshold=self.config.inline_threshold,
        )
        new_id = uuid.uuid4().hex
        entries = []
        for entry in plan.entries:
            data = plan.large.get(entry.position)
            ref = entry.ref if data is None else await self._artifacts.put(data)
            entries.append(dataclasses.replace(entry, run_id=new_id, ref=ref))
        now = self.clock.now()
        hosted = record.flow in self._flows
        new = RunRecord(
            id=new_id,
            flow=record.flow,
            status="running",
            created_at=now,
            updated_at=now,
            input=record.input,
            owner=self.owner if hosted else None,
            lease_until=now + self.config.lease_seconds if hosted else None,
            replay_of=run_id,
            budget=record.budget,
        )
        stored, _ = await self.store.create_run(new, entries)
        self.events.touch(new_id)
        log.info(
            "replaying run %s as %s from position %d (%d entries reused)",
            run_id,
            new_id,
            plan.live_from,
            len(entries),
        )
        if hosted:
            self._activate(stored)
        else:
            await self._announce_runnable()
        return RunHandle._make(new_id, self)

    async def retry(self, run_id: str) -> RunHandle:
        """Resume a failed run in place from its failure point.

        Finished checkpoints are reused; the failing ones run again, and their
        earlier attempts and errors stay in the run's history. The run becomes
        ``running`` here if this runtime hosts its flow, else in any worker
        that does.

        Raises:
            kitaru.RunNotFound: no such run.
            kitaru.ReplayError: the run has not failed (nothing is changed).
        """
        self._check_open()
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        if record.status != "failed":
            raise ReplayError(
                f"run {run_id} is {record.status}; only failed runs can be retried "
                "(use replay to run a finished run again)"
            )
        marked = retry_entries(await self.store.load_journal(run_id))
        patch = RunPatch(
            run_id,
            updated_at=self.clock.now(),
            status="running",
            clear_error=True,
            expect=("failed",),
        )
        if not await self.store.record(marked, patch):
            raise ReplayError(f"run {run_id} changed while it was being retried; try again")
        self.events.touch(run_id)
        self.supervisor.recent.pop(run_id, None)
        log.info("retrying run %s (%d failed calls run again)", run_id, len(marked))
        updated = await self.store.get_run(run_id)
        if updated is not None and not await self._resume(updated):
            await self._announce_runnable()
        return RunHandle._make(run_id, self)

    async def cancel(self, run_id: str) -> bool:
        """Cancel an unfinished run; returns False if it had already finished.

        Raises:
            kitaru.RunNotFound: no such run.
        """
        self._check_open()
        patch = RunPatch(
            run_id, updated_at=self.clock.now(), status="cancelled", release=True, clear_wait=True
        )
        updated = await self.store.update_run(patch)
        self.events.touch(run_id)
        actor = self._directory.live.get(run_id)
        if actor is not None:
            actor.cancel()
        if updated is None:
            if await self.store.get_run(run_id) is None:
                raise RunNotFound(run_id)
            return False
        return True


def _wants(record: RunRecord, topic: str | None) -> bool:
    """True if ``record`` is suspended and a message on ``topic`` (or a deadline) wakes it."""
    if record.status not in ("waiting", "sleeping"):
        return False
    return topic is None or topic in (record.wait_topics or "").split(",")


def runtime(
    *,
    store: str | None = None,
    artifacts: str | None = None,
    flows: Sequence[Flow[Any, Any]] = (),
    clock: Clock | None = None,
    **settings: Any,
) -> Runtime:
    """Create a runtime; use it as ``async with kitaru.runtime() as rt:``.

    Args:
        store: run store URL (default ``KITARU_STORE``, else
            ``sqlite:///.kitaru/kitaru.db``).
        artifacts: artifact store folder or fsspec URL (default
            ``KITARU_ARTIFACTS``, else ``.kitaru/artifacts``).
        flows: flows this runtime hosts from the start; their unfinished runs
            whose owner is gone are resumed when the runtime opens.
        clock: where deadlines are read (``kitaru.testing.FakeClock`` in tests).
        **settings: any other :class:`kitaru.RuntimeConfig` field.

    Raises:
        kitaru.ConfigurationError: an unknown setting or invalid value.
    """
    config = resolve_config(store=store, artifacts=artifacts, **settings)
    return Runtime(config, flows, clock)


#: Bound on runs remembered by ``retry_stalled``.
_STALLED_MAX = 100_000
#: Bound on remembered local message ids (beyond it, the wake service merely
#: pokes some runs twice, which is harmless).
_POSTED_MAX = 100_000


def _check_flow(flow: object) -> None:
    if not isinstance(flow, Flow):
        raise TypeError(
            f"expected a @flow-decorated function, got {flow!r}; decorate it with @kitaru.flow"
        )
