"""Which model a call goes to, and litellm: loading it and reading its responses.

A model is an alias from the runtime's ``models`` setting (its litellm model
string, default parameters and, with ``api_key_env``, the variable holding its
API key) or a litellm model string as given; ``None`` means the alias
``default``. litellm is imported on the first live call, never by ``import
kitaru`` nor by a replay.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from .._errors import ConfigurationError
from ..journal._budget import CallUsage
from . import _guard

if TYPE_CHECKING:
    from types import ModuleType

    from .._config import RuntimeConfig

__all__ = ("content_of", "load_litellm", "resolve_model", "usage_of")


def resolve_model(config: RuntimeConfig, model: str | None) -> tuple[str, dict[str, Any]]:
    """The litellm model string and default parameters for an alias or model string.

    Raises:
        kitaru.ConfigurationError: no model and no ``default`` alias, or the
            alias's ``api_key_env`` variable is not set.
    """
    key = "default" if model is None else model
    spec = config.models.get(key)
    if spec is None:
        if model is None:
            raise ConfigurationError(
                "kitaru.llm() got no model and no 'default' model alias is configured; pass "
                "model='gpt-4o-mini' (any litellm model string) or an alias, or configure one: "
                '[tool.kitaru.models] default = "gpt-4o-mini" in pyproject.toml, '
                "KITARU_MODEL_DEFAULT=gpt-4o-mini, or kitaru.runtime(models={...})"
            )
        return model, {}
    params = dict(spec)
    target = str(params.pop("model"))
    env = params.pop("api_key_env", None)
    if env is not None:
        value = os.environ.get(str(env))
        if not value:
            raise ConfigurationError(
                f"model alias {key!r} reads its API key from the environment variable {env}, "
                "which is not set"
            )
        params["api_key"] = value
    return target, params


_litellm: ModuleType | None = None


async def load_litellm() -> ModuleType:
    """litellm, imported on first use in a worker thread (it takes seconds), guard applied."""
    global _litellm
    module = _litellm
    if module is None:
        # Not sys.modules: while another thread imports it, it is there half-initialised;
        # import_module waits for that import to finish.
        module = _litellm = await anyio.to_thread.run_sync(importlib.import_module, "litellm")
    if _guard.active():
        _guard.patch(module)
    return module


def content_of(response: Any) -> str:
    """The answer's text (``""`` when the response has none)."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError):
        return ""
    return "" if content is None else str(content)


def usage_of(litellm: ModuleType, response: Any, model: str) -> CallUsage:
    """What one litellm response spent: tokens, and the cost when litellm knows the price."""
    usage = getattr(response, "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    if cost is None:
        try:
            cost = litellm.completion_cost(completion_response=response, model=model)
        except Exception:
            cost = None  # a model without a known price: tokens only
    return CallUsage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=None if cost is None else float(cost),
        model=model,
    )
