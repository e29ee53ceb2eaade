"""Runtime settings and where they come from.

Precedence, strongest first: explicit ``kitaru.runtime(...)`` arguments, then
``kitaru.configure(...)``, then ``KITARU_*`` environment variables, then a
config file (``kitaru.toml``, or ``[tool.kitaru]`` in ``pyproject.toml``, in the
current folder), then the embedded default under ``./.kitaru/``.

Model aliases merge alias by alias across those sources (an environment
variable can repoint ``fast`` while ``smart`` still comes from the file):

.. code-block:: toml

    [tool.kitaru.models]                 # or [models] in kitaru.toml
    fast = "gpt-4o-mini"                 # alias = litellm model string
    smart = { model = "anthropic/claude-sonnet-4-5", temperature = 0.2 }

    [tool.kitaru.budget]                 # default budget of every run
    tokens = 200000
    cost_usd = 2.0

Environment: ``KITARU_MODEL_FAST=openai/gpt-4o`` (the alias is the lowercased
rest of the name; it keeps the alias's other parameters),
``KITARU_BUDGET_TOKENS=200000``, ``KITARU_BUDGET_COST_USD=2.0``,
``KITARU_LLM_RETRIES=3``, ``KITARU_LLM_BACKOFF=1.0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._errors import ConfigurationError
from ._types import Budget

__all__ = ("RuntimeConfig", "configure", "resolve_config")


class RuntimeConfig(BaseModel):
    """Settings of one runtime (frozen once resolved)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    #: Run store URL: ``sqlite:///path``, ``memory://``, ``postgresql://...``.
    store: str = "sqlite:///.kitaru/kitaru.db"
    #: Artifact store: a folder or any fsspec URL (``memory://``, ``s3://...``).
    artifacts: str = ".kitaru/artifacts"
    #: Values whose JSON is larger than this go to the artifact store.
    inline_threshold: int = Field(default=64 * 1024, ge=0)
    #: Most runs executing at once in this runtime; more wait their turn.
    max_live_runs: int = Field(default=10_000, ge=1)
    #: Seconds a run's lease lasts without renewal before another worker may take it.
    lease_seconds: float = Field(default=30.0, gt=0)
    #: Restarts allowed per run for infrastructure failures within ``restart_window``.
    max_restarts: int = Field(default=3, ge=0)
    restart_window: float = Field(default=60.0, gt=0)
    #: First restart delay in seconds; doubles per restart.
    restart_backoff: float = Field(default=0.1, ge=0)
    #: Worker threads for sync flow bodies (sync checkpoints use anyio's default pool).
    sync_flow_threads: int = Field(default=64, ge=1)
    #: Seconds a suspended flow stays in memory before it is evicted (0: at once).
    idle_grace: float = Field(default=2.0, ge=0)
    #: Most suspended flows kept in memory; beyond it the least recently active goes.
    max_resident: int = Field(default=1000, ge=0)
    #: Seconds between checks for messages written by other processes.
    poll_interval: float = Field(default=0.1, gt=0)
    #: Model aliases for ``kitaru.llm``: alias -> {"model": litellm model string,
    #: **default parameters}; a plain string is shorthand for {"model": string}.
    #: ``api_key_env`` names the environment variable holding the API key.
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: Budget of runs that have none of their own nor one from their flow.
    budget: Budget | None = None
    #: Retries of an LLM call after a transient provider error (rate limit,
    #: timeout, connection error, 5xx); permanent errors are not retried.
    llm_retries: int = Field(default=3, ge=0)
    #: Seconds before the first of those retries; doubles each time (30 s at most).
    llm_backoff: float = Field(default=1.0, ge=0)

    @field_validator("models", mode="before")
    @classmethod
    def _model_specs(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        specs: dict[str, Any] = {}
        for alias, spec in value.items():
            if isinstance(spec, str):
                spec = {"model": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
                raise ValueError(
                    f"model alias {alias!r} must be a litellm model string or a table with a "
                    f'"model" key (e.g. {{model = "gpt-4o-mini", temperature = 0}}), got {spec!r}'
                )
            specs[str(alias)] = dict(spec)
        return specs


_FIELDS = frozenset(RuntimeConfig.model_fields)
_process_defaults: dict[str, Any] = {}


def configure(**settings: Any) -> None:
    """Set this process's defaults for every runtime opened afterwards.

    Accepts any :class:`RuntimeConfig` field (``store``, ``artifacts``,
    ``max_live_runs``, ...). Explicit ``kitaru.runtime(...)`` arguments still
    win. ``configure()`` with no arguments resets the defaults.

    Raises:
        kitaru.ConfigurationError: an unknown setting or an invalid value.
    """
    _check_keys(settings, "kitaru.configure()")
    if not settings:
        _process_defaults.clear()
        return
    merged = {**_process_defaults, **settings}
    _validate(merged, "kitaru.configure()")
    _process_defaults.clear()
    _process_defaults.update(merged)


def resolve_config(**explicit: Any) -> RuntimeConfig:
    """Merge every source of settings into one :class:`RuntimeConfig`."""
    _check_keys(explicit, "kitaru.runtime()")
    merged: dict[str, Any] = {}
    models: dict[str, dict[str, Any]] = {}
    sources = (
        _from_file(Path.cwd()),
        _from_env(),
        _process_defaults,
        {k: v for k, v in explicit.items() if v is not None},
    )
    for source in sources:
        merged.update(source)
        _merge_models(models, source.get("models"))
    if models:
        merged["models"] = models
    return _validate(merged, "the kitaru settings")


def _merge_models(into: dict[str, dict[str, Any]], models: Any) -> None:
    """Merge a source's aliases alias by alias; invalid shapes are left to validation."""
    if not isinstance(models, dict):
        return
    for alias, spec in models.items():
        spec = {"model": spec} if isinstance(spec, str) else spec
        if isinstance(spec, dict):
            into[alias] = {**into.get(alias, {}), **spec}
        else:
            into[alias] = spec


def _check_keys(settings: dict[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - _FIELDS)
    if unknown:
        raise ConfigurationError(
            f"{where} got unknown setting(s) {', '.join(unknown)}; "
            f"known settings: {', '.join(sorted(_FIELDS))}"
        )


def _validate(settings: dict[str, Any], where: str) -> RuntimeConfig:
    try:
        return RuntimeConfig(**settings)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid value in {where}: {exc}") from None


def _from_env() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in _FIELDS - {"models", "budget"}:
        value = os.environ.get(f"KITARU_{name.upper()}")
        if value is not None and value != "":
            found[name] = value
    models = {
        key.removeprefix("KITARU_MODEL_").lower(): {"model": value}
        for key, value in os.environ.items()
        if key.startswith("KITARU_MODEL_") and len(key) > len("KITARU_MODEL_") and value
    }
    if models:
        found["models"] = models
    budget = {
        field: os.environ[f"KITARU_BUDGET_{field.upper()}"]
        for field in ("tokens", "cost_usd")
        if os.environ.get(f"KITARU_BUDGET_{field.upper()}")
    }
    if budget:
        found["budget"] = budget
    return found


def _from_file(folder: Path) -> dict[str, Any]:
    import tomllib  # here, not at import: most processes never read a config file

    toml = folder / "kitaru.toml"
    try:
        if toml.is_file():
            data = tomllib.loads(toml.read_text())
            section = data.get("kitaru", data)
            return {k: v for k, v in section.items() if k in _FIELDS}
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            data = tomllib.loads(pyproject.read_text())
            section = data.get("tool", {}).get("kitaru", {})
            return {k: v for k, v in section.items() if k in _FIELDS}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read kitaru settings from {folder}: {exc}") from exc
    return {}
