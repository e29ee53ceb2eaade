"""The runtime: an async context manager that hosts flows.

It opens, in order, the run store, the (lazy) artifact store and one task group
that owns every actor and service; leaving it cancels them, lets in-flight
commits finish (they are shielded), releases this runtime's leases so another
runtime can resume its runs at once, and closes the stores in reverse order.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._clock import Clock, SystemClock
from .._config import RuntimeConfig, resolve_config
from .._errors import (
    RunNotFound,
    RuntimeStateError,
)
from .._types import BudgetLike, RunHandle, RunInfo, RunStatus, as_budget
from ..actors._directory import Directory
from ..actors._flow_actor import FlowActor
from ..actors._supervisor import Supervisor
from ..journal._host import HostedFlow
from ..journal._replay_plan import CheckpointRef, Overrides
from ..storage._registry import open_store
from ..storage.artifacts import LazyArtifacts
from ..storage.base import RunPatch, RunRecord, RunStore
from . import _rerun
from ._event_bus import EventBus
from ._flows import FlowTable
from ._inspect import find_run, load_output, run_info
from ._placement import Placement
from ._services import lease_service, timer_service, wake_service

__all__ = ("Runtime", "current_runtime", "runtime")

log = logging.getLogger("kitaru.runtime")

#: Descendants a cancel looks at, at most (child flows of child flows...).
_MAX_CHILDREN = 100_000

#: The innermost open runtime of the current task (see ``current_runtime``).
runtime_var: ContextVar[Runtime | None] = ContextVar("kitaru_runtime", default=None)


def current_runtime() -> Runtime | None:
    """The innermost open runtime of this task, if any."""
    return runtime_var.get()


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Runtime:
    """Hosts flows; create it with :func:`kitaru.runtime`."""

    def __init__(
        self,
        config: RuntimeConfig,
        flows: Sequence[HostedFlow] = (),
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._state = _State.UNOPENED
        self._flows = FlowTable()
        for f in flows:
            self._flows.register(f)
        self._directory: Directory[FlowActor] = Directory()
        self._store: RunStore | None = None
        self._artifacts = LazyArtifacts(config.artifacts)
        self._tg: TaskGroup | None = None
        self._placement: Placement | None = None
        self._token: Any = None
        self._clock: Clock = clock or SystemClock()
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
        placement = self._placement = Placement(
            self._store,
            self.config,
            self._clock,
            self._directory,
            self._flows,
            self._artifacts,
            self.events,
            tg,
        )
        self._state = _State.OPEN
        self._token = runtime_var.set(self)
        tg.start_soon(lease_service, placement, name="kitaru lease service")
        tg.start_soon(wake_service, placement, name="kitaru wake service")
        tg.start_soon(timer_service, placement, name="kitaru timer service")
        await placement.recover()
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
    def clock(self) -> Clock:
        """Where deadlines are read (``kitaru.testing.FakeClock`` in tests)."""
        return self._clock

    @property
    def placement(self) -> Placement:
        """Which runs this runtime hosts and when it claims one (open runtimes only)."""
        if self._placement is None:
            raise RuntimeStateError("the runtime is not open; enter it with `async with`")
        return self._placement

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of this runtime's actors (open runtimes only)."""
        return self.placement.supervisor

    @property
    def flow_names(self) -> list[str]:
        """Names of the flows this runtime can host."""
        return list(self._flows)

    @property
    def flows(self) -> Mapping[str, HostedFlow]:
        """The flows this runtime hosts, by name (read-only)."""
        return self._flows

    def is_live(self, run_id: str) -> bool:
        """True when ``run_id`` executes (or is suspended in memory) in this runtime."""
        return run_id in self._directory.live

    @property
    def live_runs(self) -> int:
        """How many runs have an actor in this runtime right now."""
        return len(self._directory.live)

    async def run_output(self, record: RunRecord) -> Any:
        """The decoded output of a completed run's store record."""
        return await load_output(record, self._artifacts, self._flows)

    async def recover(self, limit: int = 1000) -> int:
        """Resume runs of known flows whose owner is gone; returns how many (see Placement)."""
        return await self.placement.recover(limit)

    @property
    def owner(self) -> str:
        """This runtime's lease-owner id."""
        return self._directory.owner

    # -- public API ----------------------------------------------------------
    async def start(
        self,
        flow: HostedFlow,
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
        flow: HostedFlow,
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
        flow: HostedFlow,
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
        stored_id = await self.placement.start(
            flow, args, kwargs, run_id=run_id, parent=parent, budget=own_budget, host=host
        )
        return RunHandle.bound(stored_id, self)

    async def result(self, run_id: str) -> Any:
        """Wait for the run to finish and return its output.

        Raises:
            kitaru.FlowFailed: the run failed (``kitaru.FlowCancelled`` if cancelled).
            kitaru.RunNotFound: no such run.
        """
        self._check_open()
        return await self.placement.result(run_id)

    async def get_run(self, run_id: str) -> RunInfo:
        """Everything known about a run.

        Raises:
            kitaru.RunNotFound: no such run.
        """
        self._check_open()
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return await self._info(record)

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
            return [await self._info(r, counts.get(r.id, 0)) for r in records]
        return [await self._info(r) for r in records]

    async def _info(self, record: RunRecord, count: int | None = None) -> RunInfo:
        """``record`` as a RunInfo: with its journal, or a summary when ``count`` is given."""
        journal = await self.store.load_journal(record.id) if count is None else None
        output = await self.run_output(record) if record.status == "completed" else None
        return run_info(record, journal, output=output, count=count)

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
        return await self.placement.send(run_id, value, topic=topic, key=key, sender=sender)

    async def find_run(self, prefix: str) -> str:
        """The full id of the run whose id is ``prefix`` or starts with it.

        Raises:
            kitaru.RunNotFound: no run matches, or several do (the message lists some).
        """
        self._check_open()
        return await find_run(self.store, prefix)

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
        return await _rerun.replay(self, run_id, from_checkpoint, overrides)

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
        return await _rerun.retry(self, run_id)

    async def cancel(self, run_id: str) -> bool:
        """Cancel an unfinished run and its unfinished child flows; False if it had finished.

        Cancelling cascades: every unfinished run below this one (its child
        flows, theirs, ...) is cancelled too, so no sub-agent keeps working
        for a run nobody waits for.

        Raises:
            kitaru.RunNotFound: no such run.
        """
        self._check_open()
        if not await self._cancel_one(run_id):
            if await self.store.get_run(run_id) is None:
                raise RunNotFound(run_id)
            return False
        # Child run ids extend their parent's (``parent.position``); the parent
        # links are checked so that a run merely named alike is left alone.
        cancelled = {run_id}
        for child_id in sorted(await self.store.find_runs(f"{run_id}.", limit=_MAX_CHILDREN)):
            child = await self.store.get_run(child_id)
            if child is not None and child.parent_id in cancelled:
                cancelled.add(child_id)
                await self._cancel_one(child_id)
        return True

    async def _cancel_one(self, run_id: str) -> bool:
        patch = RunPatch(
            run_id, updated_at=self.clock.now(), status="cancelled", release=True, clear_wait=True
        )
        updated = await self.store.update_run(patch)
        self.events.touch(run_id)
        actor = self._directory.live.get(run_id)
        if actor is not None:
            actor.cancel()
        return updated is not None


def runtime(
    *,
    store: str | None = None,
    artifacts: str | None = None,
    flows: Sequence[HostedFlow] = (),
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
