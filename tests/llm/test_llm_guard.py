"""The testing guard: a test that would reach a real LLM provider fails loudly, offline."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

import kitaru
from kitaru import flow
from kitaru.testing import RealLLMCallForbidden, forbid_real_llm_calls
from tests.llm.conftest import Script

pytestmark = pytest.mark.anyio

# Imported before the tests start, as a test module that uses PydanticAI does.
HAS_PYDANTIC_AI = importlib.util.find_spec("pydantic_ai") is not None
PYDANTIC_AI_MODELS = importlib.import_module("pydantic_ai.models") if HAS_PYDANTIC_AI else None


async def test_a_real_call_in_a_flow_fails_the_run_and_the_block(rt: kitaru.Runtime) -> None:
    @flow
    async def f() -> str:
        try:
            return await kitaru.llm("q", model="gpt-4o-mini")
        except Exception as exc:  # a flow that swallows it is still caught at the block's end
            return type(exc).__name__

    block = forbid_real_llm_calls()
    guard = block.__enter__()
    run = await rt.start(f)
    assert await run.result() == "RealLLMCallForbidden"
    with pytest.raises(AssertionError, match="real LLM calls were attempted") as caught:
        block.__exit__(None, None, None)
    assert "gpt-4o-mini" in str(caught.value)
    assert len(guard.violations) == 1
    (entry,) = (await run.info()).checkpoints
    assert entry.status == "failed"


async def test_bare_litellm_calls_are_guarded_too() -> None:
    import litellm

    messages = [{"role": "user", "content": "q"}]
    block = forbid_real_llm_calls()
    guard = block.__enter__()
    with pytest.raises(RealLLMCallForbidden, match="mock_response"):
        await litellm.acompletion(model="gpt-4o-mini", messages=messages)
    with pytest.raises(RealLLMCallForbidden):
        litellm.completion(model="openai/gpt-4o", messages=messages)
    with pytest.raises(AssertionError, match="real LLM calls were attempted"):
        block.__exit__(None, None, None)
    assert len(guard.violations) == 2


async def test_mocked_and_in_process_providers_are_allowed(scripted: Script) -> None:
    import litellm

    scripted.add("scripted answer")
    with forbid_real_llm_calls() as guard:
        mocked = await litellm.acompletion(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "q"}], mock_response="m"
        )
        assert mocked.choices[0].message.content == "m"
        assert await kitaru.llm("q", model="scripted/m") == "scripted answer"
    assert guard.violations == []


def test_blocks_nest_and_patch_litellm_once() -> None:
    import litellm

    with forbid_real_llm_calls():
        guarded = litellm.acompletion
        assert hasattr(guarded, "__kitaru_guarded__")
        with forbid_real_llm_calls():
            assert litellm.acompletion is guarded
        assert litellm.acompletion is guarded  # the suite's own block is still active


def test_pydantic_ai_model_requests_are_refused() -> None:
    if PYDANTIC_AI_MODELS is None:
        pytest.skip("pydantic-ai is not installed (pip install -e '.[dev]')")
    assert PYDANTIC_AI_MODELS.ALLOW_MODEL_REQUESTS is False
