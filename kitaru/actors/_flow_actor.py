"""A flow actor hosts one live run.

Python cannot serialise a coroutine frame, so an activation re-executes the
flow function from the top against the run's journal (see
``journal._execution``): recorded calls return at once, then execution
continues live. The actor ends with an outcome the supervisor acts on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from .._errors import StorageError
from .._tracing import run_span
from ..journal._context import FlowFrame, frame_var
from ..journal._execution import Execution
from ..journal._failures import describe_error, error_record
from ..journal._signals import ContinueAsNew, EvictionSignal
from ..storage.base import RunPatch, RunRecord
from ..storage.serde import dumps_plain, loads_plain
from ._outcomes import Cancelled, Completed, ContinuedAsNew, Evicted, Failed, Infra, Outcome

if TYPE_CHECKING:
    from ..journal._host import Host, HostedFlow

log = logging.getLogger("kitaru.actor")

__all__ = ("FlowActor", "Residency")


class Residency(Protocol):
    """What an actor tells its supervisor, and takes from it (the supervisor is one)."""

    #: Limits worker threads for plain-``def`` flow bodies.
    flow_threads: anyio.CapacityLimiter
    #: How many evictions user code swallowed (it caught BaseException).
    swallowed_evictions: int

    def idle(self, actor: FlowActor) -> None:
        """``actor`` suspended: its execution slot is free."""
        ...

    def release_slot(self, actor: FlowActor) -> None:
        """``actor`` awaits another run: its execution slot is free meanwhile."""
        ...

    def busy_again(self, actor: FlowActor) -> None:
        """``actor`` woke up."""
        ...

    async def reacquire(self, actor: FlowActor) -> None:
        """Take an execution slot again after a suspension."""
        ...


class FlowActor:
    """One live activation of a run inside the runtime's task group."""

    __slots__ = (
        "cancel_requested",
        "done",
        "evict_requested",
        "execution",
        "flow",
        "holds_slot",
        "host",
        "live_args",
        "outcome",
        "poked",
        "record",
        "run_id",
        "scope",
        "supervisor",
        "wake",
    )

    def __init__(
        self,
        host: Host,
        supervisor: Residency,
        record: RunRecord,
        flow: HostedFlow,
        live_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        self.host = host
        self.supervisor = supervisor
        self.record = record
        self.run_id = record.id
        self.flow = flow
        # Arguments of a run just started here: no need to read back the input
        # or the (empty) journal.
        self.live_args = live_args
        self.scope: anyio.CancelScope | None = None
        self.cancel_requested = False
        self.execution: Execution | None = None
        self.outcome: Outcome | None = None
        self.done = anyio.Event()
        #: Set when something may have changed for a suspended flow (a message,
        #: a deadline, a request to evict); waits re-check the store on it.
        self.wake = anyio.Event()
        #: A message was posted for this run (so an eviction racing it is undone).
        self.poked = False
        self.evict_requested = False
        self.holds_slot = False

    def poke(self) -> None:
        """A message arrived for this run: wake its waits."""
        self.poked = True
        self.wake.set()

    def request_eviction(self) -> None:
        """Ask a suspended flow to leave memory (residency bound reached)."""
        self.evict_requested = True
        self.wake.set()

    @asynccontextmanager
    async def suspended(self) -> AsyncIterator[None]:
        """While inside, this run holds no execution slot and counts as resident-idle."""
        supervisor = self.supervisor
        supervisor.idle(self)
        try:
            yield
        finally:
            supervisor.busy_again(self)
        if not self.holds_slot:
            await supervisor.reacquire(self)

    @asynccontextmanager
    async def slot_released(self) -> AsyncIterator[None]:
        """While inside, this run holds no execution slot but stays resident and busy.

        A parent awaiting its child flow gives its slot to the child (with
        ``max_live_runs`` parents awaiting children, none could run otherwise).
        """
        self.supervisor.release_slot(self)
        try:
            yield
        finally:
            if not self.holds_slot:
                await self.supervisor.reacquire(self)

    def cancel(self) -> None:
        """Stop the activation because the run was cancelled."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()

    async def execute(self) -> Outcome | None:
        """Run the flow once from the top; return what became of it."""
        self.poked = False
        self.evict_requested = False
        with anyio.CancelScope() as scope:
            self.scope = scope
            if self.cancel_requested:
                scope.cancel()
            try:
                return await self._execute()
            except StorageError as exc:
                return Infra(exc)
            except EvictionSignal:
                return Evicted()
        return Cancelled()

    async def _execute(self) -> Outcome | None:
        live_args, self.live_args = self.live_args, None
        if live_args is not None:
            journal: dict[int, Any] = {}
            args, kwargs = live_args
        else:
            entries = await self.host.store.load_journal(self.run_id)
            journal = {e.position: e for e in entries}
            try:
                args, kwargs = self.flow.decode_input(self.record.input)
            except Exception as exc:
                return await self._fail(exc)
        suspensions = {
            int(item["position"]): item for item in (loads_plain(self.record.wait) or [])
        }
        execution = self.execution = Execution(
            self.host,
            self.record,
            self.flow,
            journal,
            activation=self,
            suspensions=suspensions,
            metadata=loads_plain(self.record.metadata),
        )
        try:
            try:
                result = await self._invoke(execution, args, kwargs)
            except BaseExceptionGroup as group:
                # Raised inside a task group of the flow, an eviction, a
                # continue-as-new or a store failure arrives wrapped; unwrapped
                # it means what it means anywhere else (not a flow failure).
                raise _control_signal(group) from None
        except StorageError:
            raise
        except ContinueAsNew as sig:
            return await self._continue(sig)
        except Exception as exc:
            if execution.evicted:
                return self._swallowed(exc)
            return await self._fail(exc)
        finally:
            execution.closed = True
        if execution.evicted:
            return self._swallowed(None)
        return await self._complete(result)

    async def _continue(self, sig: ContinueAsNew) -> Outcome | None:
        try:
            data = self.flow.encode_input(sig.args_, sig.kwargs_)
        except Exception as exc:
            return await self._fail(exc)
        patch = RunPatch(
            self.run_id,
            updated_at=time.time(),
            status="running",
            input=data,
            clear_wait=True,
        )
        if not await self.host.store.reset_journal(patch):
            return Cancelled()
        # The next activation starts the run's next generation with nothing
        # pending: what this one read of the row no longer holds.
        self.record = dataclasses.replace(
            self.record,
            input=data,
            wait=None,
            wake_at=None,
            wait_topics=None,
            generation=self.record.generation + 1,
        )
        self.live_args = (sig.args_, sig.kwargs_)
        return ContinuedAsNew()

    def _swallowed(self, exc: BaseException | None) -> Outcome:
        self.supervisor.swallowed_evictions += 1
        log.error(
            "run %s: the flow caught kitaru's eviction signal (a BaseException) and went on "
            "(%s); its result is discarded and the run stays suspended. Do not catch "
            "BaseException in flow code (catch Exception instead).",
            self.run_id,
            "it then raised " + describe_error(exc) if exc is not None else "it then returned",
        )
        return Evicted(swallowed=True)

    async def _invoke(
        self, execution: Execution, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        with run_span(self.run_id, self.flow.name, len(execution.journal)):
            return await self._call_flow(execution, args, kwargs)

    async def _call_flow(
        self, execution: Execution, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fn = self.flow.fn
        if self.flow.is_async:
            token = frame_var.set(FlowFrame(execution))
            try:
                return await fn(*args, **kwargs)
            finally:
                frame_var.reset(token)

        def body() -> Any:
            # Runs in a worker thread with a copy of this task's context.
            frame_var.set(FlowFrame(execution, sync_thread=threading.get_ident()))
            return fn(*args, **kwargs)

        return await anyio.to_thread.run_sync(
            body, limiter=self.supervisor.flow_threads, abandon_on_cancel=True
        )

    async def _complete(self, result: Any) -> Outcome | None:
        try:
            data = self.flow.output_codec.dump(result, what=f"flow {self.flow.name!r}")
        except Exception as exc:
            return await self._fail(exc)
        value, ref = await self.execution.store_value(data) if self.execution else (data, None)
        patch = RunPatch(
            self.run_id,
            updated_at=time.time(),
            status="completed",
            output=value,
            output_ref=ref,
            release=True,
        )
        if self.execution is not None:
            patch = self.execution.with_metadata(patch)
        if not await self.host.store.record((), patch):
            return await self._superseded()
        # What a reader of the stored output gets, so callers in this process
        # and in others see the same value.
        return Completed(self.flow.output_codec.load(data, what=f"flow {self.flow.name!r}"))

    async def _fail(self, exc: BaseException) -> Outcome | None:
        patch = RunPatch(
            self.run_id,
            updated_at=time.time(),
            status="failed",
            error=describe_error(exc),
            error_info=dumps_plain(error_record(exc)),
            release=True,
        )
        if self.execution is not None:
            patch = self.execution.with_metadata(patch)
        if not await self.host.store.record((), patch):
            return await self._superseded()
        return Failed(exc)

    async def _superseded(self) -> Outcome | None:
        """The run left the active statuses under us: cancelled, or finished elsewhere."""
        record = await self.host.store.get_run(self.run_id)
        if record is not None and record.status == "cancelled":
            return Cancelled()
        return None  # another activation finished it: the store has the outcome


def _control_signal(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The signal or store failure in ``group`` the actor must act on; else ``group`` itself.

    A store failure wins (the run restarts from its journal), then a
    continue-as-new, then an eviction; a group of ordinary errors stays a
    group, and fails the run like any exception of the flow.
    """
    for kind in (StorageError, ContinueAsNew, EvictionSignal):
        found = _first(group, kind)
        if found is not None:
            return found
    return group


def _first(
    group: BaseExceptionGroup[BaseException], kind: type[BaseException]
) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
        elif isinstance(exc, kind):
            return exc
    return None
