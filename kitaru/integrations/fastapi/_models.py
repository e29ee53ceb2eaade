"""Request and response bodies of the HTTP API (runs themselves are :class:`kitaru.RunInfo`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from ... import RunStatus, Usage, WaitInfo
from ..._runtime._inspect import run_info
from ...storage.base import RunRecord

__all__ = (
    "Error",
    "FlowOut",
    "MessageAccepted",
    "MessageIn",
    "ReplayIn",
    "RunPage",
    "RunRow",
    "RunSummary",
    "StartRun",
    "ValidationErrors",
)

#: What a client-chosen run id may contain (it appears in URLs and file names).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"

_STRICT = ConfigDict(extra="forbid")


class StartRun(BaseModel):
    """Start a run: the flow's arguments by parameter name, and an optional run id."""

    model_config = _STRICT

    input: dict[str, Any] = Field(
        default_factory=dict,
        description="The flow's arguments by parameter name (``*args`` as a list under its "
        "name, ``**kwargs`` as an object under its name).",
    )
    run_id: str | None = Field(
        default=None,
        pattern=RUN_ID_PATTERN,
        description="Makes the start idempotent: starting an existing run id returns that run.",
    )


class MessageIn(BaseModel):
    """A message for a run's mailbox: the webhook that answers a pending wait."""

    model_config = _STRICT

    payload: Any = Field(description="The value; checked against the pending wait's JSON Schema.")
    topic: str = Field(default="input", min_length=1, max_length=200)
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Idempotency key: a second message with the same key for the run is "
        "accepted and dropped (the Idempotency-Key header sets it too).",
    )


class MessageAccepted(BaseModel):
    """The message is stored (202); the run consumes it when it waits on the topic."""

    run_id: str
    message_id: int
    topic: str


class ReplayIn(BaseModel):
    """Replay a run as a new run, from a checkpoint, with recorded values overridden."""

    model_config = _STRICT

    from_checkpoint: str | int | None = Field(
        default=None,
        description="A checkpoint name (its first call), 'name#N' (its N-th call) or a journal "
        "position; default: after the last override, or the start.",
    )
    overrides: dict[str, Any] | None = Field(
        default=None, description="Recorded values to replace, keyed like from_checkpoint."
    )


class RunRow(BaseModel):
    """A run as its row alone gives it, without its journal.

    The one projection of a run that lists of runs (:class:`RunSummary`) and
    the summaries in event streams share.
    """

    id: str
    flow: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    pending_wait: WaitInfo | None = None
    wake_at: datetime | None = Field(
        default=None,
        description="When a sleeping run wakes up, or a pending wait's deadline expires.",
    )
    replay_of: str | None = None
    parent_id: str | None = None
    usage: Usage = Usage()

    @classmethod
    def of(cls, record: RunRecord, **extra: Any) -> Self:
        """A run store record's fields of :class:`kitaru.RunInfo` (``extra``: a subclass's)."""
        info = run_info(record, None)
        fields = {name: getattr(info, name) for name in RunRow.model_fields}
        return cls(**fields, **extra)


class RunSummary(RunRow):
    """A run in a list: its row, without the journal (``RunSummary.of(record, checkpoints=n)``)."""

    checkpoints: int = Field(description="Journal entries so far.")


class RunPage(BaseModel):
    """One page of runs, newest first."""

    runs: list[RunSummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class FlowOut(BaseModel):
    """A flow this API can start."""

    name: str
    doc: str | None = None
    input_schema: dict[str, Any] = Field(
        description="JSON Schema of the 'input' object that starts a run."
    )


class Error(BaseModel):
    """An error that is not about the request's fields (401, 403, 404, 409, 413, 415)."""

    detail: str


class ValidationErrors(BaseModel):
    """422: what does not fit, in FastAPI's shape (``loc``, ``msg``, ``type``)."""

    detail: list[dict[str, Any]]
