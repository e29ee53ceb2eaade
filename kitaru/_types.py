"""Public value types: run statuses and the frozen records the runtime returns."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ._errors import ConfigurationError

__all__ = (
    "Backoff",
    "Budget",
    "BudgetLike",
    "CheckpointInfo",
    "RunHandle",
    "RunInfo",
    "RunStatus",
    "Usage",
    "WaitInfo",
    "as_budget",
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
    #: When a sleeping run wakes up, or its pending wait's deadline expires.
    wake_at: datetime | None = None
    usage: Usage = Field(default_factory=Usage)
    replay_of: str | None = None
    parent_id: str | None = None
    owner: str | None = None
    #: Run-level ``kitaru.log`` metadata.
    metadata: dict[str, Any] = {}
    #: Artifacts the run saved with ``kitaru.save``: name -> content reference.
    artifacts: dict[str, str] = {}


class RunSource(Protocol):
    """What a :class:`RunHandle` asks about its run (the runtime that started it)."""

    async def result(self, run_id: str) -> Any:
        """Wait for the run to finish and return its output."""
        ...

    async def get_run(self, run_id: str) -> RunInfo:
        """The run's current :class:`RunInfo`."""
        ...


class RunHandle(BaseModel):
    """A started run: its ``id``, ``await result()`` and ``await info()``."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: str
    _runtime: RunSource = PrivateAttr()

    @classmethod
    def bound(cls, run_id: str, source: RunSource) -> RunHandle:
        """The handle of run ``run_id``, answered by ``source`` (the runtime that has it)."""
        handle = cls(id=run_id)
        handle._runtime = source
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


class Budget(BaseModel):
    """How much a run may spend on LLM calls: tokens, US dollars, or both.

    ``tokens`` counts input plus output tokens. ``cost_usd`` counts the cost
    litellm's price table (or PydanticAI's) gives each call; calls to models
    without a known price add nothing to it. A call is refused once the run has
    spent as much as a limit allows, so the last allowed call can take the run
    past it.

    Give a run a budget with ``@flow(budget=Budget(tokens=50_000))`` (every
    run of the flow), ``rt.start(flow, ..., budget=Budget(cost_usd=0.5))`` (one
    run: stored with it, so it survives restarts), or ``kitaru.configure(
    budget=...)`` / ``[tool.kitaru.budget]`` (runs with neither). The most
    specific one applies. A plain dict such as ``{"tokens": 50_000}`` works
    wherever a Budget does.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    #: Input plus output tokens the run may spend (``None``: no token limit).
    tokens: int | None = Field(default=None, ge=0)
    #: US dollars the run may spend (``None``: no cost limit).
    cost_usd: float | None = Field(default=None, ge=0)

    def exceeded(self, tokens: int, cost_usd: float | None) -> str | None:
        """Why a run that spent ``tokens`` and ``cost_usd`` may not call again, else ``None``."""
        if self.tokens is not None and tokens >= self.tokens:
            return f"{tokens:,} tokens of its {self.tokens:,}-token budget"
        if self.cost_usd is not None and (cost_usd or 0.0) >= self.cost_usd:
            return f"${cost_usd or 0.0:.4f} of its ${self.cost_usd:.4f} budget"
        return None

    def to_json(self) -> bytes:
        """The JSON stored with a run."""
        return self.model_dump_json(exclude_none=True).encode()


#: What the ``budget=`` arguments accept.
BudgetLike = Budget | Mapping[str, Any]


def as_budget(value: BudgetLike | None, where: str) -> Budget | None:
    """``value`` as a :class:`Budget` (``None`` stays ``None``).

    Raises:
        kitaru.ConfigurationError: not a budget (the message names ``where``).
    """
    if value is None or isinstance(value, Budget):
        return value
    try:
        return Budget.model_validate(dict(value))
    except (ValidationError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{where}: {value!r} is not a budget; use kitaru.Budget(tokens=..., cost_usd=...) "
            f"or a dict with those keys ({exc})"
        ) from None


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
