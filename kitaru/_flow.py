"""``@flow``: a durable function whose run survives crashes and restarts.

A :class:`Flow` registers nothing globally: a runtime learns a flow when it is
started through it or passed to ``kitaru.runtime(flows=[...])``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import typing
from collections.abc import Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.from_thread

from ._errors import ConfigurationError, FlowCancelled, FlowFailed
from ._runtime._current import current_runtime
from ._types import BudgetLike, as_budget
from .journal._context import FlowFrame, frame_var
from .journal._durable import Call, durable
from .journal._execution import Execution
from .storage.base import JournalEntry
from .storage.serde import Codec, codec_for

__all__ = ("Flow", "flow")

P = ParamSpec("P")
R = TypeVar("R")


class Flow(Generic[P, R]):
    """A durable flow; created by :func:`flow`."""

    def __init__(
        self, fn: Callable[P, Any], *, name: str | None = None, budget: BudgetLike | None = None
    ) -> None:
        if not inspect.isfunction(fn):
            raise TypeError(
                f"@flow decorates a function (def or async def), got {fn!r}; "
                "wrap the code in a function and decorate that"
            )
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"@flow cannot decorate the generator {fn.__qualname__}; make it return "
                "its result instead"
            )
        self.fn = fn
        self.name = name or fn.__name__
        #: Token/cost budget of each run (a run's own ``rt.start(budget=...)`` wins).
        self.budget = as_budget(budget, f"@flow {self.name!r}")
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._hints: dict[str, Any] | None = None
        functools.update_wrapper(self, fn)

    # -- types -------------------------------------------------------------
    def type_hints(self) -> dict[str, Any]:
        """The flow function's resolved annotations (parameters and ``return``).

        Raises:
            kitaru.ConfigurationError: an annotation names something not importable.
        """
        hints = self._hints
        if hints is None:
            try:
                hints = typing.get_type_hints(self.fn, include_extras=True)
            except Exception as exc:
                raise ConfigurationError(
                    f"cannot resolve the type annotations of flow {self.name!r}: {exc}. "
                    "Make every name used in its annotations importable at module level."
                ) from exc
            self._hints = hints
        return hints

    def _param_codec(self, param: inspect.Parameter) -> Codec:
        annotation = self.type_hints().get(param.name, Any)
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return codec_for(tuple[annotation, ...])  # type: ignore[valid-type]
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return codec_for(dict[str, annotation])  # type: ignore[valid-type]
        return codec_for(annotation)

    @property
    def output_codec(self) -> Codec:
        """Codec of the flow's return annotation."""
        return codec_for(self.type_hints().get("return", Any))

    def encode_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Bind arguments to the signature and encode them as one JSON object.

        Raises:
            TypeError: the arguments do not fit the flow's signature.
            kitaru.SerializationError: an argument cannot be stored as its annotation.
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"arguments do not fit flow {self.name!r}{self.signature}: {exc}"
            ) from None
        parts = []
        for pname, value in bound.arguments.items():
            codec = self._param_codec(self.signature.parameters[pname])
            data = codec.dump(value, what=f"argument {pname!r} of flow {self.name!r}")
            parts.append(json.dumps(pname).encode() + b":" + data)
        return b"{" + b",".join(parts) + b"}"

    def decode_input(self, data: bytes | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Rebuild typed ``(args, kwargs)`` from :meth:`encode_input`'s JSON."""
        raw: dict[str, Any] = json.loads(data) if data else {}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for pname, param in self.signature.parameters.items():
            if pname not in raw:
                continue
            what = f"argument {pname!r} of flow {self.name!r}"
            value = self._param_codec(param).load(json.dumps(raw[pname]), what=what)
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value)
            elif param.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[pname] = value
            else:
                args.append(value)
        return tuple(args), kwargs

    # -- calling -----------------------------------------------------------
    @overload
    def __call__(
        self: Flow[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]: ...

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the flow and return its result.

        Inside another flow this starts a child run (journaled in the parent);
        inside an open runtime it starts a run there; elsewhere it opens the
        default runtime for the call. Async flows return an awaitable; a plain
        ``def`` flow called with no event loop running blocks and returns the
        result.
        """
        frame = frame_var.get()
        if isinstance(frame, FlowFrame):
            execution = frame.execution
            position = execution.take_position()
            if frame.in_sync_thread():
                return anyio.from_thread.run(self._child, execution, position, args, kwargs)
            return self._child(execution, position, args, kwargs)
        if not self.is_async and not _loop_running():
            return self.run(*args, **kwargs)
        return self._call_in_runtime(args, kwargs)

    def run(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Blocking convenience for scripts: run in the default runtime, return the result."""
        return anyio.run(functools.partial(self._call_in_runtime, args, kwargs))

    async def _call_in_runtime(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        runtime = current_runtime()
        if runtime is not None:
            handle = await runtime.start(self, *args, **kwargs)
            return await handle.result()
        from ._runtime import runtime as open_runtime

        async with open_runtime() as rt:
            handle = await rt.start(self, *args, **kwargs)
            return await handle.result()

    async def _child(
        self, execution: Execution, position: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # The child's run id is derived from the parent's and the position, so
        # a replayed parent finds the same child instead of starting another.
        child_id = f"{execution.run_id}.{execution.call_id(position)}"

        def failed(entry: JournalEntry) -> BaseException:
            info = json.loads(entry.error or b"{}")
            run_id = info.get("run_id", "?")
            if str(info.get("type", "")).endswith(".FlowCancelled"):
                return FlowCancelled(run_id)  # as the parent saw it live
            return FlowFailed(run_id, info.get("message", "failed"))

        async def live(call: Call) -> Any:
            call.metadata = {"run_id": child_id}
            # The parent counts as busy (a sibling's wait does not evict it
            # while nobody would wake it) but gives its execution slot to the
            # child meanwhile (parents awaiting children cannot starve them).
            execution.busy += 1
            try:
                activation = execution.activation
                if activation is None:
                    result = await execution.host.run_child(
                        self, args, kwargs, run_id=child_id, parent=execution.run_id
                    )
                else:
                    async with activation.slot_released():
                        result = await execution.host.run_child(
                            self, args, kwargs, run_id=child_id, parent=execution.run_id
                        )
            except FlowFailed as exc:
                details = {"run_id": exc.run_id, "message": exc.error}
                call.failure_details = lambda _: details
                await call.fail(exc)
                raise
            finally:
                execution.busy -= 1
            call.data = self.output_codec.dump(result, what=call.what)
            return result

        return await durable(
            execution,
            position,
            self.name,
            "flow",
            live,
            codec=self.output_codec,
            recorded_failure=failed,
            label=f"child flow {self.name!r}",
        )

    def __repr__(self) -> str:
        return f"<flow {self.name}>"


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(
    *, name: str | None = None, budget: BudgetLike | None = None
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    budget: BudgetLike | None = None,
) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Mark a function (``async def`` or plain ``def``) as a durable flow.

    ``@flow`` or ``@flow(name="writer")``. Start it with
    ``await rt.start(my_flow, ...)`` in an open runtime, ``await my_flow(...)``
    (inside a runtime, another flow, or anywhere with an event loop: the
    default runtime opens for the call), or ``my_flow.run(...)`` from a script.
    Checkpoints it calls are recorded once per run; after a crash the run is
    resumed by re-executing the flow, with recorded results returned from the
    journal.

    ``budget`` (a :class:`kitaru.Budget` or a dict like ``{"tokens": 50_000}``)
    limits what each run may spend on LLM calls; a run started with its own
    ``budget=`` uses that one instead.
    """
    if fn is not None:
        return Flow(fn, name=name, budget=budget)

    def decorate(f: Callable[P, R]) -> Flow[P, R]:
        return Flow(f, name=name, budget=budget)

    return decorate
