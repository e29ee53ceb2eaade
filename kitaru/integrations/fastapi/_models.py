"""Request and response bodies of the HTTP API (runs themselves are :class:`kitaru.RunInfo`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..._types import RunInfo, RunStatus, Usage, WaitInfo

__all__ = (
    "Error",
    "FlowOut",
    "MessageAccepted",
    "MessageIn",
    "ReplayIn",
    "RunPage",
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


class RunSummary(BaseModel):
    """A run in a list: its row, without the journal."""

    id: str
    flow: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    pending_wait: WaitInfo | None = None
    usage: Usage = Usage()
    replay_of: str | None = None
    parent_id: str | None = None
    checkpoints: int = Field(description="Journal entries so far.")

    @classmethod
    def of(cls, info: RunInfo) -> RunSummary:
        """The summary of a full :class:`kitaru.RunInfo`."""
        return cls(
            id=info.id,
            flow=info.flow,
            status=info.status,
            created_at=info.created_at,
            updated_at=info.updated_at,
            error=info.error,
            pending_wait=info.pending_wait,
            usage=info.usage,
            replay_of=info.replay_of,
            parent_id=info.parent_id,
            checkpoints=info.checkpoint_count,
        )


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
