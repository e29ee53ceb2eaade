"""Token and cost budgets of a run, and the usage accounting behind them.

Every LLM call kitaru makes (``kitaru.llm``, a PydanticAI model request)
reports its usage as a :class:`CallUsage`. Where it goes depends on where the
call was made:

- in flow code, the call is its own journal entry (kind ``llm``): its usage is
  the entry's ``"usage"`` metadata and is added to the run's totals in the same
  transaction that records the entry;
- inside a checkpoint body, the call is covered by the checkpoint: its usage is
  summed into the checkpoint's ``"usage"`` metadata and added to the run when
  the checkpoint commits (its result, or its failure).

A budget is checked before each live call against the run's totals in the
store (plus, inside a checkpoint, what that checkpoint spent so far): once
spent reaches the limit the call is refused with :class:`kitaru.BudgetExceeded`.
Calls already in flight when the limit is reached still finish, so a run with
concurrent calls can end slightly over its budget.

A budget covers the run's child flows too (a flow called inside a flow runs
as a child run): what a run has spent, for its budget, is its own calls plus
those of every run below it, and a call in a child run must also fit the
budget of each run above it. Otherwise an agent could spend past its budget
by handing the work to a sub-agent. A run's own totals (``RunInfo.usage``)
stay its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import BudgetExceeded
from .._types import Budget
from ..storage.base import RunPatch

if TYPE_CHECKING:
    from ..storage.base import RunRecord
    from ._execution import Execution
    from ._host import Host

__all__ = (
    "CallUsage",
    "add_to_metadata",
    "check_budget",
    "effective_budget",
    "usage_patch",
)


@dataclass(slots=True)
class CallUsage:
    """What one LLM call spent."""

    input_tokens: int = 0
    output_tokens: int = 0
    #: ``None`` when the model's price is unknown.
    cost_usd: float | None = None
    #: Seconds spent waiting for the provider (backoff pauses excluded).
    latency_s: float = 0.0
    model: str | None = None

    def add(self, other: CallUsage) -> None:
        """Sum ``other`` (another attempt of the same call) into this one."""
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd = _add_cost(self.cost_usd, other.cost_usd)
        self.latency_s += other.latency_s
        self.model = other.model or self.model

    @property
    def empty(self) -> bool:
        """True when nothing was spent (no tokens, no known cost)."""
        return not (self.input_tokens or self.output_tokens or self.cost_usd)

    def metadata(self) -> dict[str, Any]:
        """The ``"usage"`` metadata of an ``llm`` journal entry."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "latency_s": round(self.latency_s, 6),
            "model": self.model,
        }


def _add_cost(a: float | None, b: float | None) -> float | None:
    # Unknown costs add nothing; the sum is unknown only if every part is.
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def add_to_metadata(metadata: dict[str, Any], usage: CallUsage) -> None:
    """Sum a call made inside a checkpoint body into the checkpoint's ``"usage"``."""
    current = metadata.get("usage")
    if not isinstance(current, dict):
        current = metadata["usage"] = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": None,
            "latency_s": 0.0,
            "calls": 0,
            "models": [],
        }
    current["input_tokens"] += usage.input_tokens
    current["output_tokens"] += usage.output_tokens
    current["cost_usd"] = _add_cost(current["cost_usd"], usage.cost_usd)
    current["latency_s"] = round(current["latency_s"] + usage.latency_s, 6)
    current["calls"] += 1
    if usage.model is not None and usage.model not in current["models"]:
        current["models"].append(usage.model)


def usage_patch(run_id: str, usage: Mapping[str, Any] | CallUsage | None) -> RunPatch | None:
    """The run change that adds ``usage`` to the run's totals (``None`` if nothing was spent)."""
    if usage is None:
        return None
    if isinstance(usage, CallUsage):
        tokens_in, tokens_out, cost = usage.input_tokens, usage.output_tokens, usage.cost_usd
    else:
        tokens_in = int(usage.get("input_tokens") or 0)
        tokens_out = int(usage.get("output_tokens") or 0)
        raw = usage.get("cost_usd")
        cost = None if raw is None else float(raw)
    if not tokens_in and not tokens_out and cost is None:
        return None
    return RunPatch(
        run_id,
        updated_at=time.time(),
        add_input_tokens=tokens_in,
        add_output_tokens=tokens_out,
        add_cost_usd=cost,
    )


def effective_budget(execution: Execution) -> Budget | None:
    """The run's budget: its own (stored), else its flow's, else the runtime default."""
    stored = execution.record.budget
    if stored is not None:
        return Budget.model_validate_json(stored)
    if execution.flow.budget is not None:
        return execution.flow.budget
    return execution.host.config.budget


def _budget_of(host: Host, record: RunRecord) -> Budget | None:
    """``effective_budget`` of a run above this one (its flow's, if hosted here)."""
    if record.budget is not None:
        return Budget.model_validate_json(record.budget)
    budget = host.flow_budget(record.flow)
    if budget is not None:
        return budget
    return host.config.budget


async def check_budget(execution: Execution, pending: Mapping[str, Any] | None = None) -> None:
    """Refuse a live LLM call when the run, or a run above it, has spent its budget.

    ``pending`` is the ``"usage"`` metadata of the enclosing checkpoint, spent
    but not yet added to the run.

    Raises:
        kitaru.BudgetExceeded: the run's tree (plus ``pending``), or the tree
            of a run above it, reached a limit.
    """
    host = execution.host
    store = host.store
    limits: list[tuple[str, Budget]] = []
    own = effective_budget(execution)
    if own is not None:
        limits.append((execution.run_id, own))
    parent = execution.record.parent_id
    while parent is not None:
        record = await store.get_run(parent)
        if record is None:
            break
        budget = _budget_of(host, record)
        if budget is not None:
            limits.append((record.id, budget))
        parent = record.parent_id
    extra_tokens = 0
    extra_cost: float | None = None
    if pending:
        extra_tokens = int(pending.get("input_tokens") or 0) + int(
            pending.get("output_tokens") or 0
        )
        extra_cost = pending.get("cost_usd")
    for run_id, budget in limits:
        # The store is the truth: it holds every committed call of the tree,
        # including those of earlier activations and of concurrent checkpoints.
        tokens, cost = await store.tree_usage(run_id)
        reason = budget.exceeded(tokens + extra_tokens, _add_cost(cost, extra_cost))
        if reason is None:
            continue
        if run_id == execution.run_id:
            who = f"run {run_id} has spent {reason}"
        else:
            who = (
                f"run {execution.run_id} is a child flow of run {run_id}, which has spent {reason}"
            )
        raise BudgetExceeded(
            f"{who} (child flows included), so this LLM call was not made. Catch "
            "kitaru.BudgetExceeded to finish without it, or give the run a larger budget "
            "(rt.start(..., budget=...), @flow(budget=...) or the runtime default)."
        )
