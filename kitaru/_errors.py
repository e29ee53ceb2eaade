"""Exceptions raised by kitaru.

Every error names the thing that went wrong and what to do about it. The tree::

    KitaruError
    ├── FlowFailed            awaiting a run whose flow raised (carries the error)
    │   └── FlowCancelled     awaiting a run that was cancelled
    ├── WaitTimeout           a wait's timeout expired (raised inside the flow)
    ├── NonDeterminismError   the flow no longer makes the calls its journal recorded
    ├── SerializationError    a value does not fit its annotation / cannot be stored
    ├── InvalidMessage        a message does not fit the pending wait's schema
    ├── RunNotFound           no run with that id (or id prefix) in the store
    ├── ArtifactNotFound      a run saved no artifact of that name
    ├── ArtifactUnreadable    a stored artifact is missing or corrupted (data, not infrastructure)
    ├── ReplayError           a replay or retry that cannot be carried out (nothing created)
    ├── RunFinished           a message was sent to a run that has finished
    ├── BudgetExceeded        a run spent its token or cost budget
    ├── CheckpointFailed      a checkpoint that failed earlier, replayed from the journal
    ├── NotInFlow             a durable primitive was called outside a flow
    ├── RuntimeStateError     the runtime is closed, not open, or re-entered
    ├── ConfigurationError    a setting, URL or scheme is invalid
    └── StorageError          the store failed (driver errors are wrapped, never leaked)
        └── SchemaVersionError   the database was written by a newer kitaru

Exceptions whose ``__init__`` takes extra arguments define ``__reduce__`` so they
survive pickling across processes and threads.
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "ArtifactNotFound",
    "BudgetExceeded",
    "CheckpointFailed",
    "ConfigurationError",
    "FlowCancelled",
    "FlowFailed",
    "InvalidMessage",
    "KitaruError",
    "NonDeterminismError",
    "NotInFlow",
    "ReplayError",
    "RunFinished",
    "RunNotFound",
    "RuntimeStateError",
    "SchemaVersionError",
    "SerializationError",
    "StorageError",
    "WaitTimeout",
)


class KitaruError(Exception):
    """Base class of every error kitaru raises on purpose."""


class FlowFailed(KitaruError):
    """A run ended in status ``failed``.

    Attributes:
        run_id: the run that failed.
        error: one line, ``"ValueError: bad input"``.
        error_type: the dotted name of the original exception's class.
        traceback: the formatted traceback recorded when the flow failed.
        original: the original exception object when the run failed in this
            process, else ``None`` (it is also chained as ``__cause__``).
    """

    def __init__(
        self,
        run_id: str,
        error: str,
        *,
        error_type: str | None = None,
        traceback: str | None = None,
        original: BaseException | None = None,
    ) -> None:
        super().__init__(
            f"run {run_id} failed: {error.rstrip('.')}. Inspect it with rt.get_run({run_id!r}); "
            f"fix the cause and call rt.retry({run_id!r}) to resume it from the failure point."
        )
        self.run_id = run_id
        self.error = error
        self.error_type = error_type
        self.traceback = traceback
        self.original = original
        if original is not None:
            self.__cause__ = original

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                FlowFailed,
                (self.run_id, self.error),
                {"error_type": self.error_type, "traceback": self.traceback},
            ),
        )


class FlowCancelled(FlowFailed):
    """The awaited run was cancelled before it finished."""

    def __init__(self, run_id: str) -> None:
        KitaruError.__init__(self, f"run {run_id} was cancelled before it finished")
        self.run_id = run_id
        self.error = "cancelled"
        self.error_type = None
        self.traceback = None
        self.original = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (FlowCancelled, (self.run_id,))


class WaitTimeout(KitaruError):
    """A ``kitaru.wait`` reached its timeout before a message arrived."""


class NonDeterminismError(KitaruError):
    """The flow's code no longer makes the durable calls its journal recorded."""

    def __init__(self, run_id: str, position: int, recorded: str, new: str) -> None:
        super().__init__(
            f"run {run_id}: at position {position} the journal recorded a call to "
            f"{recorded!r} but the flow now calls {new!r}. Results are never mixed: make "
            "the flow call its durable functions in the same order on every execution "
            "(move anything non-deterministic into a checkpoint), or replay the run from "
            f"a checkpoint before this position: rt.replay({run_id!r}, from_checkpoint=N) "
            f"with N < {position}, or `kitaru replay {run_id} --from N`."
        )
        self.run_id = run_id
        self.position = position
        self.recorded = recorded
        self.new = new

    def __reduce__(self) -> tuple[Any, ...]:
        return (NonDeterminismError, (self.run_id, self.position, self.recorded, self.new))


class SerializationError(KitaruError):
    """A value cannot be stored as (or read back into) its annotated type."""


class InvalidMessage(KitaruError):
    """A message does not fit the schema of the wait it was sent to."""


class RunNotFound(KitaruError, LookupError):
    """No run with the given id exists in the store (or an id prefix is ambiguous)."""

    def __init__(self, run_id: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"no run {run_id!r} in this store; list runs with rt.list_runs() "
            "and check that the runtime points at the right store"
        )
        self.run_id = run_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunNotFound, (self.run_id, str(self)))


class ArtifactNotFound(KitaruError, LookupError):
    """A run saved no artifact of the given name (``kitaru.load``)."""


class ArtifactUnreadable(KitaruError):
    """A value's artifact is missing from the artifact store or does not match its hash.

    This is the data's fault, not the store's: the run that needs it fails
    (its error names the artifact) instead of being restarted again and again.
    Restore the object (or point the runtime at the right artifact store) and
    ``rt.retry`` the run.
    """


class ReplayError(KitaruError, ValueError):
    """A replay or retry request that cannot be carried out; nothing was created or changed.

    For example: the checkpoint to replay from is not in the run's journal, an
    override does not fit its checkpoint's return type, or a retried run has
    not failed.
    """


class RunFinished(KitaruError):
    """The run has finished (completed, failed or cancelled) and takes no more messages."""


class BudgetExceeded(KitaruError):
    """A run's token or cost budget is spent."""


class CheckpointFailed(KitaruError):
    """A checkpoint failed in an earlier execution and the journal replays that failure.

    Raised when the original exception class cannot be rebuilt from the
    journal (it is not importable or takes other arguments).
    """

    def __init__(self, name: str, error_type: str, message: str) -> None:
        super().__init__(f"checkpoint {name!r} failed earlier with {error_type}: {message}")
        self.name = name
        self.error_type = error_type
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (CheckpointFailed, (self.name, self.error_type, self.message))


class NotInFlow(KitaruError):
    """A durable primitive that needs a running flow was called outside one."""


class RuntimeStateError(KitaruError):
    """The runtime is not open, already closed, or entered twice."""


class ConfigurationError(KitaruError):
    """A setting, URL or scheme is invalid."""


class StorageError(KitaruError):
    """The store failed; the driver's exception is chained as ``__cause__``."""


class SchemaVersionError(StorageError):
    """The database schema is newer than this version of kitaru understands."""


def _rebuild(cls: type[Exception], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
    return cls(*args, **kwargs)
