"""The testing guard behind :func:`kitaru.testing.forbid_real_llm_calls`.

While a guard is active, ``litellm.completion`` / ``litellm.acompletion``
(which ``kitaru.llm`` calls) refuse calls without ``mock_response`` unless the
model is routed to a custom litellm provider (those run in this process), and
PydanticAI's ``ALLOW_MODEL_REQUESTS`` is off. litellm is patched when a guard
starts if it is imported, and when kitaru imports it during a guard.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import KitaruError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ("LLMGuard", "RealLLMCallForbidden", "active", "guard", "patch")


class RealLLMCallForbidden(KitaruError):
    """A call would have reached a real LLM provider while the testing guard is on."""


class LLMGuard:
    """An active :func:`kitaru.testing.forbid_real_llm_calls`; lists the calls it stopped."""

    def __init__(self) -> None:
        self.violations: list[str] = []


_guards: list[LLMGuard] = []
_saved_allow: list[Any] = []


def _check_guarded(kwargs: Mapping[str, Any]) -> None:
    if not _guards or kwargs.get("mock_response") is not None:
        return
    model = str(kwargs.get("model", ""))
    litellm = sys.modules.get("litellm")
    custom = {
        str(item.get("provider"))
        for item in (getattr(litellm, "custom_provider_map", None) or [])
        if isinstance(item, Mapping)
    }
    if model.partition("/")[0] in custom and "/" in model:
        return  # a provider implemented in this process, not a network call
    message = (
        f"a real LLM call to model {model!r} was attempted while "
        "kitaru.testing.forbid_real_llm_calls() is active; pass mock_response=... (or route the "
        "model to a custom litellm provider) in tests"
    )
    _guards[-1].violations.append(message)
    raise RealLLMCallForbidden(message)


def active() -> bool:
    """True while a guard is active."""
    return bool(_guards)


def patch(litellm: ModuleType) -> None:
    """Guard ``litellm``'s completion functions (idempotent)."""
    for fname in ("acompletion", "completion"):
        original = getattr(litellm, fname)
        if getattr(original, "__kitaru_guarded__", None) is not None:
            continue
        if fname == "acompletion":

            @functools.wraps(original)
            async def guarded_async(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
                _check_guarded(kwargs)
                return await __original(*args, **kwargs)

            wrapper: Any = guarded_async
        else:

            @functools.wraps(original)
            def guarded_sync(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
                _check_guarded(kwargs)
                return __original(*args, **kwargs)

            wrapper = guarded_sync
        wrapper.__kitaru_guarded__ = original
        setattr(litellm, fname, wrapper)


def _unpatch(litellm: ModuleType) -> None:
    for fname in ("acompletion", "completion"):
        original = getattr(getattr(litellm, fname), "__kitaru_guarded__", None)
        if original is not None:
            setattr(litellm, fname, original)


def guard() -> tuple[LLMGuard, Callable[[], None]]:
    """Start a guard; returns it and the function that ends it."""
    new = LLMGuard()
    litellm = sys.modules.get("litellm")
    if litellm is not None:
        patch(litellm)  # idempotent; kitaru's own import of litellm patches it too
    if not _guards:
        models = sys.modules.get("pydantic_ai.models")
        if models is not None:
            _saved_allow.append(getattr(models, "ALLOW_MODEL_REQUESTS", True))
            setattr(models, "ALLOW_MODEL_REQUESTS", False)  # noqa: B010
    _guards.append(new)

    def end() -> None:
        _guards.remove(new)
        if _guards:
            return
        litellm = sys.modules.get("litellm")
        if litellm is not None:
            _unpatch(litellm)
        models = sys.modules.get("pydantic_ai.models")
        if models is not None and _saved_allow:
            setattr(models, "ALLOW_MODEL_REQUESTS", _saved_allow.pop())  # noqa: B010

    return new, end
