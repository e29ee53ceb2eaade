"""Provider errors: transient ones retried with backoff, permanent ones not; recorded, scrubbed."""

from __future__ import annotations

import anyio
import httpx
import pytest

import kitaru
from kitaru import flow
from kitaru._llm._retries import is_transient
from tests.conftest import RuntimeFactory
from tests.llm.conftest import Script, auth_error, rate_limited

pytestmark = pytest.mark.anyio


@flow
async def ask() -> str:
    return await kitaru.llm("q", model="scripted/m")


async def test_transient_errors_are_retried_and_recorded(
    make_runtime: RuntimeFactory, scripted: Script
) -> None:
    scripted.add(rate_limited("slow down 1"), rate_limited("slow down 2"), "finally")
    async with make_runtime(llm_backoff=0) as rt:
        run = await rt.start(ask)
        assert await run.result() == "finally"
        (entry,) = (await run.info()).checkpoints
    assert (entry.status, entry.attempts) == ("completed", 3)
    assert entry.errors == [
        "RateLimitError: litellm.RateLimitError: slow down 1",
        "RateLimitError: litellm.RateLimitError: slow down 2",
    ]


async def test_retries_are_bounded(make_runtime: RuntimeFactory) -> None:
    @flow
    async def f() -> str:
        return await kitaru.llm(
            "q", model="gpt-4o-mini", mock_response="litellm.InternalServerError", retries=2
        )

    async with make_runtime(llm_backoff=0.01) as rt:
        run = await rt.start(f)
        with pytest.raises(kitaru.FlowFailed) as caught:
            await run.result()
        (entry,) = (await run.info()).checkpoints
    assert caught.value.error_type == "litellm.exceptions.InternalServerError"
    assert (entry.status, entry.attempts) == ("failed", 3)
    assert len(entry.errors) == 3


async def test_permanent_errors_are_not_retried(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add(auth_error("invalid credentials"), "never reached")
    run = await rt.start(ask)
    with pytest.raises(kitaru.FlowFailed) as caught:
        await run.result()
    assert caught.value.error_type == "litellm.exceptions.AuthenticationError"
    assert scripted.count == 1
    (entry,) = (await run.info()).checkpoints
    assert (entry.status, entry.attempts) == ("failed", 1)
    assert entry.errors == ["AuthenticationError: litellm.AuthenticationError: invalid credentials"]


async def test_a_recorded_failure_is_raised_again_on_replay_without_a_call(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add(auth_error("nope"))

    @flow
    async def f() -> str:
        try:
            answer = await kitaru.llm("q", model="scripted/m")
        except Exception as exc:
            answer = type(exc).__name__
        await kitaru.wait(str)  # always-evict mode replays from here
        return answer

    run = await rt.start(f)
    while (await run.info()).status != "waiting":
        await anyio.sleep(0.01)
    await rt.send(run.id, "go")
    assert await run.result() == "AuthenticationError"
    assert scripted.count == 1


async def test_retry_runs_a_failed_call_again_keeping_its_history(
    make_runtime: RuntimeFactory, scripted: Script
) -> None:
    scripted.add(auth_error("key revoked"), "with the new key")
    async with make_runtime(flows=[ask]) as rt:
        run = await rt.start(ask)
        with pytest.raises(kitaru.FlowFailed):
            await run.result()
        await rt.retry(run.id)
        assert await run.result() == "with the new key"
        (entry,) = (await run.info()).checkpoints
    assert (entry.status, entry.attempts) == ("completed", 2)
    assert entry.errors == ["AuthenticationError: litellm.AuthenticationError: key revoked"]


async def test_keys_never_reach_errors_or_the_journal(
    make_runtime: RuntimeFactory, scripted: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    passed_key = "sk-passed-0123456789abcdef"
    env_key = "sk-environment-abcdef0123456789"
    monkeypatch.setenv("SCRIPTED_API_KEY", env_key)
    scripted.add(
        rate_limited(f"quota of key {env_key} used up"),
        auth_error(f"Incorrect API key provided: {passed_key}"),
    )

    @flow
    async def f() -> str:
        return await kitaru.llm(
            "q", model="scripted/m", api_key=passed_key, extra_headers={"X-Api-Key": passed_key}
        )

    async with make_runtime(llm_backoff=0) as rt:
        run = await rt.start(f)
        with pytest.raises(kitaru.FlowFailed) as caught:
            await run.result()
        info = await run.info()
        journal = await rt.store.load_journal(run.id)
        record = await rt.store.get_run(run.id)
    assert record is not None
    texts = [
        str(caught.value),
        caught.value.traceback or "",
        str(caught.value.original),
        info.error or "",
        info.traceback or "",
        repr(info.checkpoints),
        *(repr(e) for e in journal),
        repr(record),
    ]
    for text in texts:
        assert passed_key not in text
        assert env_key not in text
    assert "Incorrect API key provided: ***" in (info.error or "")
    assert "quota of key *** used up" in info.checkpoints[0].errors[0]


def test_transient_and_permanent_classes() -> None:
    import litellm

    def make(cls: type[Exception]) -> Exception:
        kwargs = {"message": "m", "llm_provider": "openai", "model": "gpt-4o-mini"}
        if cls is litellm.PermissionDeniedError:
            request = httpx.Request("POST", "http://test.invalid")
            kwargs["response"] = httpx.Response(403, request=request)
        return cls(**kwargs)

    for cls in (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
    ):
        assert is_transient(make(cls)), cls
    for cls in (
        litellm.AuthenticationError,
        litellm.BadRequestError,
        litellm.NotFoundError,
        litellm.PermissionDeniedError,
        litellm.ContextWindowExceededError,
    ):
        assert not is_transient(make(cls)), cls
    assert is_transient(TimeoutError())
    assert not is_transient(ValueError("bad"))
