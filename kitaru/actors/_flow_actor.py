"""A flow actor hosts one live run.

Python cannot serialise a coroutine frame, so an activation re-executes the
flow function from the top against the run's journal (see ``_execution``):
recorded calls return at once, then execution continues live. The actor ends
with an outcome the supervisor acts on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from .._context import FlowFrame, frame_var
from .._errors import StorageError
from .._execution import Execution, describe_error, error_record
from ..storage.base import RunPatch, RunRecord
from ..storage.serde import dumps_plain

if TYPE_CHECKING:
    from .._flow import Flow
    from .._runtime import Runtime

__all__ = ("Cancelled", "Completed", "Failed", "FlowActor", "Infra", "Outcome")


@dataclass(frozen=True, slots=True)
class Completed:
    """The flow returned; its value is committed."""

    value: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """The flow raised; the run is ``failed`` with the error stored."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The run was cancelled (by ``rt.cancel`` here or elsewhere)."""


@dataclass(frozen=True, slots=True)
class Infra:
    """The store (or another part of the runtime) failed; the run may be restarted."""

    error: BaseException


Outcome = Completed | Failed | Cancelled | Infra


class FlowActor:
    """One live activation of a run inside the runtime's task group."""

    __slots__ = (
        "cancel_requested",
        "done",
        "execution",
        "flow",
        "live_args",
        "outcome",
        "record",
        "run_id",
        "runtime",
        "scope",
    )

    def __init__(
        self,
        runtime: Runtime,
        record: RunRecord,
        flow: Flow[Any, Any],
        live_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        self.runtime = runtime
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

    def cancel(self) -> None:
        """Stop the activation because the run was cancelled."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()

    async def execute(self) -> Outcome:
        """Run the flow once from the top; return what became of it."""
        with anyio.CancelScope() as scope:
            self.scope = scope
            if self.cancel_requested:
                scope.cancel()
            try:
                return await self._execute()
            except StorageError as exc:
                return Infra(exc)
        return Cancelled()

    async def _execute(self) -> Outcome:
        rt = self.runtime
        live_args, self.live_args = self.live_args, None
        if live_args is not None:
            journal: dict[int, Any] = {}
            args, kwargs = live_args
        else:
            entries = await rt.store.load_journal(self.run_id)
            journal = {e.position: e for e in entries}
            try:
                args, kwargs = self.flow.decode_input(self.record.input)
            except Exception as exc:
                return await self._fail(exc)
        execution = self.execution = Execution(rt, self.run_id, self.flow.name, journal)
        try:
            result = await self._invoke(execution, args, kwargs)
        except StorageError:
            raise
        except Exception as exc:
            return await self._fail(exc)
        finally:
            execution.closed = True
        return await self._complete(result)

    async def _invoke(
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
            body, limiter=self.runtime.flow_threads, abandon_on_cancel=True
        )

    async def _complete(self, result: Any) -> Outcome:
        rt = self.runtime
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
        if not await rt.store.record((), patch):
            return Cancelled()
        # What a reader of the stored output gets, so callers in this process
        # and in others see the same value.
        return Completed(self.flow.output_codec.load(data, what=f"flow {self.flow.name!r}"))

    async def _fail(self, exc: BaseException) -> Outcome:
        patch = RunPatch(
            self.run_id,
            updated_at=time.time(),
            status="failed",
            error=describe_error(exc),
            error_info=dumps_plain(error_record(exc)),
            release=True,
        )
        if not await self.runtime.store.record((), patch):
            return Cancelled()
        return Failed(exc)
