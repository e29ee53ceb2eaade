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
import random
import time
import typing
import weakref
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.from_thread
import anyio.to_thread

from ._budget import usage_patch
from ._context import CheckpointFrame, FlowFrame, frame_var
from ._errors import ConfigurationError, SerializationError
from ._execution import (
    RETRY,
    Execution,
    describe_error,
    error_record,
    rebuild_error,
    retry_history,
)
from ._tracing import checkpoint_span
from .storage.serde import Codec, codec_for

__all__ = ("Backoff", "Checkpoint", "checkpoint", "checkpoints_named")

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between attempts of a failing checkpoint.

    The delay before retry ``n`` (1-based) is ``initial * factor ** (n - 1)``,
    capped at ``max``, then spread by up to ``jitter`` (a fraction) either way.
    """

    initial: float = 0.5
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        base = min(self.max, self.initial * self.factor ** (retry - 1))
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, base)


BackoffSpec = float | int | Backoff | Callable[[int], float]


def _delay(spec: BackoffSpec | None, retry: int) -> float:
    if spec is None:
        return Backoff().delay(retry)
    if isinstance(spec, Backoff):
        return spec.delay(retry)
    if isinstance(spec, int | float):
        return float(spec)
    return float(spec(retry))


def _return_annotation(fn: Callable[..., Any], what: str) -> Any:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot resolve the type annotations of {what}: {exc}. Make every name used "
            "in its annotations importable at module level."
        ) from exc
    return hints.get("return", Any)


#: Every checkpoint defined in this process, by name: replay overrides are
#: checked against the return type of the checkpoint they replace.
_by_name: dict[str, weakref.WeakSet[Checkpoint[Any, Any]]] = {}


def checkpoints_named(name: str) -> list[Checkpoint[Any, Any]]:
    """The checkpoints of this process recorded under ``name``."""
    return list(_by_name.get(name, ()))


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
        functools.update_wrapper(self, fn)
        _by_name.setdefault(self.name, weakref.WeakSet()).add(self)

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

    async def _durable(self, execution: Execution, position: int, args: Any, kwargs: Any) -> Any:
        entry = execution.recorded(position, self.name, "checkpoint")

        def what() -> str:
            return f"checkpoint {self.name!r} (run {execution.run_id}, position {position})"

        # Attempts and errors of earlier activations (a retried run), kept in the history.
        prior = 0
        errors: list[str] = []
        if entry is not None:
            if entry.status == "completed":
                return await execution.load(entry, self.codec, what)
            if entry.status != RETRY:
                raise rebuild_error(self.name, entry.error)
            prior, errors = retry_history(entry)
        started = time.time()
        frame = CheckpointFrame(execution, position, self.name)
        attempt = 0
        while True:
            attempt += 1
            try:
                execution.busy += 1
                try:
                    result = await self._attempt(frame, args, kwargs)
                finally:
                    execution.busy -= 1
                data = self.codec.dump(result, what=what)
                break
            except SerializationError as exc:
                await self._commit_failure(execution, frame, started, prior + attempt, errors, exc)
                raise
            except Exception as exc:
                errors.append(describe_error(exc))
                if attempt > self.retries:
                    await self._commit_failure(
                        execution, frame, started, prior + attempt, errors, exc
                    )
                    raise
            await anyio.sleep(_delay(self.backoff, attempt))
        value, ref = await execution.store_value(data)
        metadata = dict(frame.metadata)
        if errors:
            metadata["errors"] = errors
        await execution.commit(
            execution.entry(
                position,
                self.name,
                "checkpoint",
                started_at=started,
                attempts=prior + attempt,
                value=value,
                ref=ref,
                metadata=metadata,
            ),
            # LLM calls made in the body count on the run when the checkpoint commits.
            usage_patch(execution.run_id, metadata.get("usage")),
        )
        # Hand back what a replay would return, so live and replayed executions
        # see the same value (a tuple under ``list[Any]`` comes back a list).
        codec = self.codec
        if codec.exact is not None and type(result) is codec.exact:
            return result
        return codec.load(data, what=what)

    async def _attempt(self, frame: CheckpointFrame, args: Any, kwargs: Any) -> Any:
        token = frame_var.set(frame)
        try:
            with (
                checkpoint_span(self.name, frame.execution.run_id, frame.position),
                anyio.fail_after(self.timeout) if self.timeout else nullcontext(),
            ):
                if self.is_async:
                    return await typing.cast(Awaitable[Any], self.fn(*args, **kwargs))
                # abandon_on_cancel: a timed-out sync body cannot be stopped, but
                # the flow need not wait for it.
                call = functools.partial(self.fn, *args, **kwargs)
                return await anyio.to_thread.run_sync(
                    call, abandon_on_cancel=self.timeout is not None
                )
        finally:
            frame_var.reset(token)

    async def _commit_failure(
        self,
        execution: Execution,
        frame: CheckpointFrame,
        started: float,
        attempts: int,
        errors: list[str],
        exc: BaseException,
    ) -> None:
        if not errors or errors[-1] != describe_error(exc):
            errors.append(describe_error(exc))
        await execution.commit(
            execution.entry(
                frame.position,
                self.name,
                "checkpoint",
                started_at=started,
                attempts=attempts,
                error=error_record(exc, errors),
                metadata={**frame.metadata, "errors": errors},
            ),
            usage_patch(execution.run_id, frame.metadata.get("usage")),
        )

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
