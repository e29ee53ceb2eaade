"""Fixtures of the LLM suite: real litellm, offline.

``mock_response`` gives canned answers for most tests. ``scripted`` registers a
litellm custom provider (``scripted/<name>`` models) that answers from a queue
of texts and exceptions and counts its calls: that is how a test sees that a
replayed run never reaches the provider, and how a transient error is followed
by a success. The custom provider runs in this process, so the LLM guard lets
its calls through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


class Script:
    """Answers (texts, or exceptions to raise) handed out in order, and the calls made."""

    def __init__(self) -> None:
        self.answers: list[str | BaseException] = []
        self.calls: list[dict[str, Any]] = []
        #: Tokens reported per answer.
        self.prompt_tokens = 7
        self.completion_tokens = 3

    def add(self, *answers: str | BaseException) -> Script:
        self.answers.extend(answers)
        return self

    @property
    def count(self) -> int:
        return len(self.calls)


@pytest.fixture
def scripted() -> Iterator[Script]:
    """A ``scripted/...`` litellm provider answering from a :class:`Script`."""
    import litellm
    from litellm import CustomLLM

    script = Script()

    class Handler(CustomLLM):  # type: ignore[misc]
        async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
            script.calls.append(
                {"model": kwargs.get("model"), "messages": list(kwargs.get("messages") or [])}
            )
            if not script.answers:
                raise AssertionError("the scripted provider has no answer left")
            answer = script.answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return litellm.ModelResponse(
                model=str(kwargs.get("model")),
                choices=[{"message": {"role": "assistant", "content": answer}}],
                usage={
                    "prompt_tokens": script.prompt_tokens,
                    "completion_tokens": script.completion_tokens,
                    "total_tokens": script.prompt_tokens + script.completion_tokens,
                },
            )

    saved = litellm.custom_provider_map
    litellm.custom_provider_map = [{"provider": "scripted", "custom_handler": Handler()}]
    try:
        yield script
    finally:
        litellm.custom_provider_map = saved


def rate_limited(message: str = "slow down") -> Exception:
    import litellm

    return litellm.RateLimitError(message=message, llm_provider="scripted", model="scripted/m")


def auth_error(message: str = "bad key") -> Exception:
    import litellm

    return litellm.AuthenticationError(message=message, llm_provider="scripted", model="scripted/m")
