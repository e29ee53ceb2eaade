"""``@checkpoint``: a function whose result is recorded once per run.

Inside a flow, a call takes the next journal position when it is made; a
recorded result at that position is returned without running the body, else
the body runs (with retries, backoff and timeout), its result is committed,
then returned. Outside a flow the function simply runs. Inside a checkpoint's
own body, nested checkpoints also simply run: the outer result covers them.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import nullcontext
from typing import Any, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.from_thread
import anyio.to_thread

from ._errors import ConfigurationError, SerializationError
from ._tracing import checkpoint_span
from ._types import Backoff
from .journal._context import CheckpointFrame, FlowFrame, frame_var
from .journal._durable import Call, durable
from .journal._execution import Execution
from .journal._failures import describe_error
from .journal._registry import register_checkpoint
from .storage.base import JournalEntry
from .storage.serde import Codec, codec_for

__all__ = ("Backoff", "Checkpoint", "checkpoint")

P = ParamSpec("P")
R = TypeVar("R")


BackoffSpec = float | int | Backoff | Callable[[int], float]

#: Reused by every attempt without a timeout (``nullcontext`` is reentrant).
_NO_TIMEOUT = nullcontext()


def _delay(spec: BackoffSpec | None, retry: int) -> float:
    if spec is None:
        return Backoff().delay(retry)
    if isinstance(spec, Backoff):
        return spec.delay(retry)
    if isinstance(spec, int | float):
        return float(spec)
    return float(spec(retry))


def _forget_attempt(metadata: dict[str, Any]) -> None:
    """Drop what a failed attempt logged and saved; keep what it spent on LLM calls.

    The entry records the attempt that succeeded: ``kitaru.load`` must not
    find an artifact of an attempt that failed.
    """
    usage = metadata.get("usage")
    metadata.clear()
    if usage is not None:
        metadata["usage"] = usage


def _return_annotation(fn: Callable[..., Any], what: str) -> Any:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot resolve the type annotations of {what}: {exc}. Make every name used "
            "in its annotations importable at module level."
        ) from exc
    return hints.get("return", Any)


class Checkpoint(Generic[P, R]):
    """A durable function; created by :func:`checkpoint`."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: BackoffSpec | None = None,
        timeout: float | None = None,
    ) -> None:
        if not inspect.isfunction(fn) and not inspect.ismethod(fn):
            raise TypeError(
                f"@checkpoint decorates a function (def or async def), got {fn!r}; "
                "wrap the call in a function and decorate that"
            )
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"@checkpoint cannot decorate the generator {fn.__qualname__}: its values are "
                "produced lazily and cannot be recorded once; return a list instead"
            )
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.fn = fn
        self.name = name or fn.__name__
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        self._codec: Codec | None = None
        self._label = f"checkpoint {self.name!r}"
        functools.update_wrapper(self, fn)
        # Replay overrides are checked against the return type of the
        # checkpoint they replace, found by name.
        register_checkpoint(self)

    @property
    def codec(self) -> Codec:
        """Codec of the return annotation (resolved on first use)."""
        codec = self._codec
        if codec is None:
            what = f"checkpoint {self.name!r}"
            try:
                codec = self._codec = codec_for(_return_annotation(self.fn, what))
            except SerializationError as exc:
                raise SerializationError(f"{what}: {exc}") from exc
        return codec

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # Methods: bind like a function would, keeping the checkpoint behaviour.
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        frame = frame_var.get()
        if not isinstance(frame, FlowFrame):
            return self.fn(*args, **kwargs)  # outside a flow, or nested in a checkpoint
        position = frame.execution.take_position()
        if frame.in_sync_thread():
            return anyio.from_thread.run(self._durable, frame.execution, position, args, kwargs)
        return self._durable(frame.execution, position, args, kwargs)

    def _durable(
        self, execution: Execution, position: int, args: Any, kwargs: Any
    ) -> Coroutine[Any, Any, Any]:
        # Returns the routine's coroutine itself (no wrapper frame per call);
        # once resolved the codec is passed as is (no replay closure to make).
        codec = self._codec
        return durable(
            execution,
            position,
            self.name,
            "checkpoint",
            self._live,
            codec=codec,
            replay=None if codec is not None else self._late_replay(execution, position),
            records_failures=True,
            label=self._label,
            live_args=(args, kwargs),
        )

    async def _live(self, call: Call, args: Any, kwargs: Any) -> Any:
        """Run the body (with retries, backoff and timeout); the value a replay would return."""
        execution = call.execution
        frame = CheckpointFrame(execution, call.position, self.name, call.metadata)
        what = call.what
        attempt = 0
        while True:
            attempt += 1
            call.tries = attempt
            if attempt > 1:
                _forget_attempt(call.metadata)
            try:
                execution.busy += 1
                try:
                    result = await self._attempt(frame, args, kwargs)
                finally:
                    execution.busy -= 1
                data = self.codec.dump(result, what=what)
                break
            except SerializationError:
                raise
            except Exception as exc:
                call.errors.append(describe_error(exc))
                if attempt > self.retries:
                    raise
            await anyio.sleep(_delay(self.backoff, attempt))
        call.data = data
        # Hand back what a replay would return, so live and replayed executions
        # see the same value (a tuple under ``list[Any]`` comes back a list).
        codec = self.codec
        if codec.exact is not None and type(result) is codec.exact:
            return result
        return codec.load(data, what=what)

    def _late_replay(
        self, execution: Execution, position: int
    ) -> Callable[[JournalEntry], Awaitable[Any]]:
        async def replay(entry: JournalEntry) -> Any:
            # The codec is resolved here, not before the call: a return
            # annotation that cannot be stored fails the call (recorded) after
            # the body ran, not before.
            what = f"checkpoint {self.name!r} (run {execution.run_id}, position {position})"
            return await execution.load(entry, self.codec, what)

        return replay

    async def _attempt(self, frame: CheckpointFrame, args: Any, kwargs: Any) -> Any:
        token = frame_var.set(frame)
        try:
            with (
                checkpoint_span(self.name, frame.execution.run_id, frame.position),
                anyio.fail_after(self.timeout) if self.timeout else _NO_TIMEOUT,
            ):
                if self.is_async:
                    # No typing.cast here: it is a call on every attempt.
                    body: Awaitable[Any] = self.fn(*args, **kwargs)
                    return await body
                # abandon_on_cancel: a timed-out sync body cannot be stopped, but
                # the flow need not wait for it.
                call = functools.partial(self.fn, *args, **kwargs)
                return await anyio.to_thread.run_sync(
                    call, abandon_on_cancel=self.timeout is not None
                )
        finally:
            frame_var.reset(token)

    def __repr__(self) -> str:
        return f"<checkpoint {self.name}>"


@overload
def checkpoint(fn: Callable[P, R], /) -> Checkpoint[P, R]: ...


@overload
def checkpoint(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: BackoffSpec | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Checkpoint[P, R]]: ...


def checkpoint(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: BackoffSpec | None = None,
    timeout: float | None = None,
) -> Checkpoint[P, R] | Callable[[Callable[P, R]], Checkpoint[P, R]]:
    """Mark a function whose result is recorded once per run.

    Use bare (``@checkpoint``) or with options
    (``@checkpoint(name="fetch", retries=3, backoff=2.0, timeout=30)``).

    Inside a flow, the call is matched to the run's journal by its position
    (taken when the function is called) and its name: a recorded result is
    returned without running the body; otherwise the body runs, its result is
    committed, then returned. Async bodies are awaited; plain ``def`` bodies run
    in a worker thread, so ``await`` the call inside async flows. Outside a flow
    the function just runs.

    Args:
        fn: the function (when used bare).
        name: the name recorded in the journal (default: the function's name).
        retries: extra attempts after a failure (default 0).
        backoff: seconds between attempts, a :class:`Backoff` policy, or a
            function of the retry number (default ``Backoff()``).
        timeout: seconds per attempt; an attempt past it fails with ``TimeoutError``.
    """
    if fn is not None:
        return Checkpoint(fn, name=name, retries=retries, backoff=backoff, timeout=timeout)

    def decorate(f: Callable[P, R]) -> Checkpoint[P, R]:
        return Checkpoint(f, name=name, retries=retries, backoff=backoff, timeout=timeout)

    return decorate
