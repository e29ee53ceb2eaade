"""``kitaru.wait``, ``receive``, ``send`` and ``sleep``: thin functions over the flow context.

Each takes its journal position when it is called. In an ``async def`` flow it
returns an awaitable; in a plain ``def`` flow (running in a worker thread) it
blocks and returns the value, so the same primitives serve both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, NoReturn, TypeVar

import anyio.from_thread
from pydantic import BaseModel, ConfigDict

from ._errors import NotInFlow
from ._runtime._current import current_runtime
from ._tracing import wait_span
from .journal._context import FlowFrame, require_flow
from .journal._signals import ContinueAsNew
from .journal._suspend import Received, durable_send, durable_sleep, durable_wait
from .storage.serde import codec_for

__all__ = ("Message", "continue_as_new", "receive", "send", "sleep", "wait")

T = TypeVar("T")


class Message(BaseModel, Generic[T]):
    """A message as :func:`kitaru.receive` returns it: the value and who sent it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)

    value: T
    topic: str
    #: Run id of the flow that sent it (``None`` when sent from outside a flow).
    sender: str | None = None
    id: int | None = None


def _seconds(value: float | dt.timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{what} must be >= 0 seconds, got {seconds}")
    return seconds


def _dispatch(frame: FlowFrame, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    if frame.in_sync_thread():
        return anyio.from_thread.run(fn, *args)
    return fn(*args)


def _waiting(
    what: str,
    schema: Any,
    question: str | None,
    topic: str,
    timeout: float | dt.timedelta | None,
    pick: Callable[[Received], Any],
) -> Any:
    frame = require_flow(what)
    position = frame.execution.take_position()
    seconds = _seconds(timeout, "timeout")
    codec = codec_for(schema)

    async def run() -> Any:
        execution = frame.execution
        with wait_span(execution.run_id, position, topic, position in execution.journal):
            got = await durable_wait(
                execution,
                position,
                topic=topic,
                codec=codec,
                question=question,
                timeout_s=seconds,
            )
        return pick(got)

    return _dispatch(frame, run)


def receive(
    schema: type[T] | Any = Any,
    *,
    question: str | None = None,
    topic: str = "input",
    timeout: float | dt.timedelta | None = None,
) -> Awaitable[Message[T]]:
    """Like :func:`wait`, but return a :class:`Message` carrying the sender's run id.

    Use it to reply: ``msg = await kitaru.receive(str)`` then
    ``await kitaru.send(msg.sender, "thanks")``.
    """
    result: Awaitable[Message[T]] = _waiting(
        "kitaru.receive()",
        schema,
        question,
        topic,
        timeout,
        lambda got: Message(value=got.value, topic=got.topic, sender=got.sender, id=got.id),
    )
    return result


def wait(
    schema: type[T] | Any = Any,
    *,
    question: str | None = None,
    topic: str = "input",
    timeout: float | dt.timedelta | None = None,
) -> Awaitable[T]:
    """Suspend the flow until a message arrives on its mailbox ``topic``; return it.

    The message is validated against ``schema`` (any type pydantic can
    validate: ``bool``, ``str``, a model, ``list[int]``...). While the flow
    waits, the pending wait (topic, question, JSON Schema, deadline) is visible
    in ``RunInfo.pending_wait``; after ``idle_grace`` seconds the flow leaves
    memory and is rehydrated when its message arrives, in this process or
    another. ``timeout`` (seconds or a timedelta) expiring raises
    :class:`kitaru.WaitTimeout` inside the flow.

    Raises:
        kitaru.NotInFlow: called outside a flow (or inside a checkpoint body).
    """
    result: Awaitable[T] = _waiting(
        "kitaru.wait()", schema, question, topic, timeout, lambda got: got.value
    )
    return result


def sleep(duration: float | dt.timedelta) -> Awaitable[None]:
    """Durable timer: the flow is evicted and woken at the deadline, across restarts.

    Raises:
        kitaru.NotInFlow: called outside a flow (use ``anyio.sleep`` there).
    """
    frame = require_flow("kitaru.sleep()")
    seconds = _seconds(duration, "duration")
    assert seconds is not None
    position = frame.execution.take_position()
    result: Awaitable[None] = _dispatch(frame, durable_sleep, frame.execution, position, seconds)
    return result


def send(run_id: str, value: Any, *, topic: str = "input") -> Awaitable[int | None]:
    """Put ``value`` in run ``run_id``'s mailbox on ``topic``.

    Inside a flow the send is journaled: a replay never sends twice, and the
    receiver sees this run as the sender. Outside a flow it uses the current
    runtime (``async with kitaru.runtime() as rt`` in this task).

    Raises:
        kitaru.InvalidMessage: the value does not fit the pending wait's schema.
        kitaru.RunNotFound: no such run.
        kitaru.RunFinished: the run has finished.
        kitaru.NotInFlow: outside a flow with no runtime open.
    """
    try:
        frame = require_flow("kitaru.send()")
    except NotInFlow:
        runtime = current_runtime()
        if runtime is None:
            raise NotInFlow(
                "kitaru.send() was called outside a flow with no runtime open; "
                "call it in a flow, inside `async with kitaru.runtime() as rt:`, or use rt.send()"
            ) from None
        outside: Awaitable[int | None] = runtime.send(run_id, value, topic=topic)
        return outside
    position = frame.execution.take_position()
    result: Awaitable[int | None] = _dispatch(
        frame, durable_send, frame.execution, position, run_id, value, topic
    )
    return result


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """Restart this run with fresh arguments and an empty journal; never returns.

    For flows that loop for weeks: the run keeps its id (so other agents can
    still address it) and its unconsumed messages, but rehydration no longer
    replays everything it ever did. Call it where the loop would go round again:
    ``kitaru.continue_as_new(state=new_state)``.

    Raises:
        kitaru.NotInFlow: called outside a flow.
    """
    require_flow("kitaru.continue_as_new()")
    raise ContinueAsNew(args, kwargs)
