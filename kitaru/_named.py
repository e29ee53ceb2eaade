"""``kitaru.log``, ``kitaru.save`` and ``kitaru.load``: metadata and named artifacts of a run.

``log`` merges JSON metadata into the current checkpoint's journal entry (or,
in flow code, into the run's row). ``save`` writes a value to the artifact
store, content-addressed, and records its name: in flow code as a journal entry
of kind ``save`` (so a replay never writes it again), inside a checkpoint body
in that checkpoint's metadata (``"artifacts": {name: ref}``). ``load`` finds the
latest artifact of that name a run saved and decodes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio.from_thread

from ._errors import ArtifactNotFound, NotInFlow, RunNotFound, SerializationError
from ._runtime._current import current_runtime
from ._runtime._inspect import find_artifacts
from .journal._context import CheckpointFrame, FlowFrame, frame_var
from .journal._durable import Call, durable
from .storage.base import JournalEntry
from .storage.serde import codec_for, dumps_plain, loads_plain

__all__ = ("load", "log", "save")

T = TypeVar("T")

#: Metadata keys kitaru itself writes into a checkpoint's entry.
RESERVED_KEYS = frozenset({"errors", "artifacts", "usage", "override"})


def log(**metadata: Any) -> None:
    """Attach JSON metadata to the current checkpoint, or to the run in flow code.

    Keys merge: a later ``log(k=...)`` replaces an earlier value of ``k``. The
    metadata is shown by ``kitaru show`` and in ``RunInfo`` (``checkpoints[i].
    metadata`` or ``metadata``). It is written with the checkpoint's result, or
    with the run's next change, so logging costs no write of its own.

    Values should be JSON data; anything else is stored as its ``str()``.

    Raises:
        kitaru.NotInFlow: called outside a flow.
        kitaru.SerializationError: a key is one kitaru reserves (``errors``,
            ``artifacts``, ``usage``, ``override``).
    """
    taken = RESERVED_KEYS.intersection(metadata)
    if taken:
        raise SerializationError(
            f"kitaru.log(): {', '.join(sorted(taken))} is reserved for kitaru's own "
            "metadata; use another key"
        )
    plain = loads_plain(dumps_plain(metadata))  # a copy, and what a reader will see
    frame = frame_var.get()
    if isinstance(frame, CheckpointFrame):
        frame.metadata.update(plain)
    elif isinstance(frame, FlowFrame):
        frame.execution.log(plain)
    else:
        raise NotInFlow(
            "kitaru.log() was called outside a flow; call it in flow or checkpoint code"
        )


def save(name: str, value: Any) -> Awaitable[str]:
    """Store ``value`` as the run's artifact ``name``; returns its content reference.

    The value is written as JSON (through pydantic, like checkpoint values) to
    the artifact store, whatever its size. In flow code the save is a durable
    call: a replay does not write it again. Inside a checkpoint body it is
    recorded with the checkpoint. Saving a name again makes the newer value the
    one :func:`load` returns. Await it in async code; in a plain ``def`` flow or
    checkpoint it blocks and returns the reference.

    Raises:
        kitaru.NotInFlow: called outside a flow.
        kitaru.SerializationError: the value cannot be stored as JSON.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an artifact name must be a non-empty string, got {name!r}")
    frame = frame_var.get()
    if frame is None:
        raise NotInFlow("kitaru.save() was called outside a flow; call it in flow code")
    execution = frame.execution
    data = codec_for(Any).dump(value, what=f"artifact {name!r} of run {execution.run_id}")
    if isinstance(frame, CheckpointFrame):

        async def in_checkpoint() -> str:
            ref = await execution.host.artifacts().put(data)
            frame.metadata.setdefault("artifacts", {})[name] = ref
            return ref

        saved: Awaitable[str] = _dispatch(in_checkpoint, None)
        return saved
    position = execution.take_position()

    async def replay(entry: JournalEntry) -> str:
        assert entry.ref is not None
        return entry.ref

    async def live(call: Call) -> str:
        call.ref = await execution.host.artifacts().put(data)
        return call.ref

    async def in_flow() -> str:
        return await durable(execution, position, name, "save", live, replay=replay)

    recorded: Awaitable[str] = _dispatch(in_flow, frame.in_sync_thread())
    return recorded


def load(run_id: str, name: str, *, schema: type[T] | Any = Any) -> Awaitable[T]:
    """The latest value run ``run_id`` saved as artifact ``name``, as ``schema``.

    Works in flow code, in checkpoint bodies and outside flows with a runtime
    open. Reading another run's artifact is not journaled: it returns what is
    saved now, so call it inside a checkpoint when the flow must replay the
    same value.

    Raises:
        kitaru.RunNotFound: no such run.
        kitaru.ArtifactNotFound: the run saved no artifact of that name.
        kitaru.NotInFlow: outside a flow with no runtime open.
    """
    frame = frame_var.get()
    host = frame.execution.host if frame is not None else current_runtime()
    if host is None:
        raise NotInFlow(
            "kitaru.load() was called outside a flow with no runtime open; call it in a "
            "flow or inside `async with kitaru.runtime():`"
        )
    codec = codec_for(schema)

    async def fetch() -> Any:
        journal = await host.store.load_journal(run_id)
        ref = find_artifacts(journal).get(name)
        if ref is None:
            if not journal and await host.store.get_run(run_id) is None:
                raise RunNotFound(run_id)
            raise ArtifactNotFound(
                f"run {run_id} saved no artifact named {name!r}; the artifacts it saved are "
                "listed in RunInfo.artifacts (kitaru show RUN)"
            )
        data = await host.artifacts().get(ref)
        return codec.load(data, what=f"artifact {name!r} of run {run_id}")

    in_sync_thread = isinstance(frame, FlowFrame) and frame.in_sync_thread()
    loaded: Awaitable[T] = _dispatch(fetch, in_sync_thread or None)
    return loaded


def _dispatch(fn: Callable[[], Coroutine[Any, Any, T]], sync: bool | None) -> Any:
    """Return the coroutine for async callers; run it to completion for threads.

    ``sync`` is ``None`` when the caller's kind is unknown (a checkpoint body):
    then a thread without a running event loop is a sync caller.
    """
    if sync is None:
        try:
            asyncio.get_running_loop()
            sync = False
        except RuntimeError:
            sync = True
    if sync:
        return anyio.from_thread.run(fn)
    return fn()
