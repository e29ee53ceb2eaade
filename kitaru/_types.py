"""Public value types: run statuses and the frozen records the runtime returns."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = (
    "CheckpointInfo",
    "RunHandle",
    "RunInfo",
    "RunStatus",
    "Usage",
    "WaitInfo",
)


class RunStatus(StrEnum):
    """Where a run is in its life; a ``str``, so ``info.status == "waiting"`` holds."""

    RUNNING = "running"
    WAITING = "waiting"
    SLEEPING = "sleeping"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


_FROZEN = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)


class Usage(BaseModel):
    """Tokens and cost spent by LLM calls of a run or a checkpoint."""

    model_config = _FROZEN

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


class WaitInfo(BaseModel):
    """A run's pending wait, as seen from outside."""

    model_config = ConfigDict(
        frozen=True, validate_by_name=True, serialize_by_alias=True, defer_build=True
    )

    topic: str
    question: str | None = None
    # ``schema`` would shadow a (deprecated) BaseModel method: store it under
    # another attribute name and expose it through the alias and a property.
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    deadline: datetime | None = None

    @property
    def schema(self) -> dict[str, Any]:  # type: ignore[override]
        """JSON Schema the answer must fit."""
        return self.schema_


class CheckpointInfo(BaseModel):
    """One durable call of a run: a checkpoint, an llm call, a wait, a send or a sleep."""

    model_config = _FROZEN

    position: int
    name: str
    kind: str
    status: str
    attempts: int
    started_at: datetime
    duration_s: float | None = None
    metadata: dict[str, Any] = {}
    #: Errors of failed attempts, oldest first ("ValueError: ...").
    errors: list[str] = []
    #: Artifact reference when the value lives in the artifact store.
    artifact: str | None = None


class RunInfo(BaseModel):
    """Everything known about one run."""

    model_config = _FROZEN

    id: str
    flow: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    input: dict[str, Any] | None = None
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    checkpoints: list[CheckpointInfo] = []
    #: Journal entries of the run (also filled when ``checkpoints`` was not loaded).
    checkpoint_count: int = 0
    pending_wait: WaitInfo | None = None
    usage: Usage = Field(default_factory=Usage)
    replay_of: str | None = None
    parent_id: str | None = None
    owner: str | None = None
    #: Run-level ``kitaru.log`` metadata.
    metadata: dict[str, Any] = {}
    #: Artifacts the run saved with ``kitaru.save``: name -> content reference.
    artifacts: dict[str, str] = {}


class RunHandle(BaseModel):
    """A started run: its ``id``, ``await result()`` and ``await info()``."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: str
    _runtime: Runtime = PrivateAttr()

    @classmethod
    def _make(cls, run_id: str, runtime: Runtime) -> RunHandle:
        handle = cls(id=run_id)
        handle._runtime = runtime
        return handle

    async def result(self) -> Any:
        """Wait until the run finishes and return its output.

        Raises:
            kitaru.FlowFailed: the run failed or was cancelled.
        """
        return await self._runtime.result(self.id)

    async def info(self) -> RunInfo:
        """The run's current :class:`RunInfo`."""
        return await self._runtime.get_run(self.id)

    def __repr__(self) -> str:
        return f"RunHandle(id={self.id!r})"
