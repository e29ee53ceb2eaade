"""The ambient execution context: which run (and which checkpoint) is executing.

A ``ContextVar`` follows anyio tasks and worker threads (each child task gets a
copy), so ``kitaru.wait()`` deep inside user code finds its run without a
``ctx`` argument.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import NotInFlow

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ("CheckpointFrame", "FlowFrame", "current_flow", "frame_var", "require_flow")


@dataclass(slots=True)
class FlowFrame:
    """Set while a flow's own code runs (not inside a checkpoint body)."""

    execution: Execution
    #: Thread ident when the flow body is a plain ``def`` running in a worker thread.
    sync_thread: int | None = None

    def in_sync_thread(self) -> bool:
        """True when called from this flow's own worker thread.

        Raises:
            kitaru.NotInFlow: called from another thread of a plain ``def`` flow
                (a thread pool it started): durable calls are numbered in call
                order, which concurrent threads would make depend on timing.
        """
        if self.sync_thread is None:
            return False
        if self.sync_thread == threading.get_ident():
            return True
        raise NotInFlow(
            "a durable call (checkpoint, wait, send, ...) of a plain def flow was made from "
            "another thread than the flow's own; kitaru numbers durable calls in the order "
            "they are made, which threads running at once would make depend on timing. "
            "Make the calls from the flow's own thread, or make the flow async and run "
            "checkpoints concurrently with asyncio.gather or a task group"
        )


@dataclass(slots=True)
class CheckpointFrame:
    """Set while a checkpoint body runs; nested durable calls just run inside it."""

    execution: Execution
    position: int
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


frame_var: ContextVar[FlowFrame | CheckpointFrame | None] = ContextVar("kitaru_frame", default=None)


def current_flow() -> FlowFrame | None:
    """The flow frame when flow code (not a checkpoint body) is executing."""
    frame = frame_var.get()
    return frame if isinstance(frame, FlowFrame) else None


def require_flow(what: str) -> FlowFrame:
    """Return the flow frame or raise :class:`NotInFlow` naming ``what``."""
    frame = frame_var.get()
    if isinstance(frame, FlowFrame):
        return frame
    where = "inside a @checkpoint body" if frame is not None else "outside a flow"
    raise NotInFlow(
        f"{what} was called {where}; it can only be called from the code of a "
        "@flow function (call it in the flow, not in a checkpoint or plain code)"
    )
