"""Model aliases and LLM settings from every config source, and how they combine."""

from __future__ import annotations

from pathlib import Path

import pytest

import kitaru
from kitaru._config import resolve_config
from kitaru._llm._models import resolve_model
from tests.conftest import RuntimeFactory
from tests.llm.conftest import Script

pytestmark = pytest.mark.anyio


def models() -> dict[str, dict[str, object]]:
    return resolve_config().models


def test_aliases_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.kitaru.models]\n"
        'fast = "gpt-4o-mini"\n'
        'smart = { model = "anthropic/claude-sonnet-4-5", temperature = 0.2 }\n'
        "[tool.kitaru.budget]\n"
        "tokens = 1000\n"
    )
    assert models() == {
        "fast": {"model": "gpt-4o-mini"},
        "smart": {"model": "anthropic/claude-sonnet-4-5", "temperature": 0.2},
    }
    assert resolve_config().budget == kitaru.Budget(tokens=1000)


def test_aliases_from_kitaru_toml(tmp_path: Path) -> None:
    (tmp_path / "kitaru.toml").write_text(
        "llm_retries = 5\n"
        "[models.fast]\n"
        'model = "gpt-4o-mini"\n'
        "max_tokens = 200\n"
        "[budget]\n"
        "cost_usd = 0.5\n"
    )
    config = resolve_config()
    assert config.models == {"fast": {"model": "gpt-4o-mini", "max_tokens": 200}}
    assert config.budget == kitaru.Budget(cost_usd=0.5)
    assert config.llm_retries == 5


def test_environment_repoints_one_alias_and_keeps_its_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kitaru.toml").write_text(
        '[models]\nfast = { model = "gpt-4o-mini", temperature = 0 }\nsmart = "gpt-4o"\n'
    )
    monkeypatch.setenv("KITARU_MODEL_FAST", "groq/llama-3.1-8b-instant")
    monkeypatch.setenv("KITARU_MODEL_LOCAL_BOX", "ollama/llama3")
    monkeypatch.setenv("KITARU_BUDGET_TOKENS", "5000")
    monkeypatch.setenv("KITARU_BUDGET_COST_USD", "1.5")
    monkeypatch.setenv("KITARU_LLM_BACKOFF", "0.25")
    config = resolve_config()
    assert config.models == {
        "fast": {"model": "groq/llama-3.1-8b-instant", "temperature": 0},
        "smart": {"model": "gpt-4o"},
        "local_box": {"model": "ollama/llama3"},
    }
    assert config.budget == kitaru.Budget(tokens=5000, cost_usd=1.5)
    assert config.llm_backoff == 0.25


def test_configure_and_runtime_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITARU_MODEL_FAST", "from-env")
    kitaru.configure(models={"fast": "from-configure", "smart": "s"})
    assert models()["fast"] == {"model": "from-configure"}
    config = resolve_config(models={"fast": {"model": "from-args", "seed": 1}})
    assert config.models == {
        "fast": {"model": "from-args", "seed": 1},
        "smart": {"model": "s"},
    }


def test_invalid_aliases_and_budgets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(kitaru.ConfigurationError, match="alias 'fast'"):
        resolve_config(models={"fast": {"temperature": 0}})
    with pytest.raises(kitaru.ConfigurationError, match="budget"):
        resolve_config(budget={"tokens": -1})
    with pytest.raises(kitaru.ConfigurationError, match="not a budget"):

        @kitaru.flow(budget={"dollars": 3})
        async def f() -> None: ...


def test_model_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    config = resolve_config(
        models={
            "default": "gpt-4o-mini",
            "keyed": {"model": "openai/gpt-4o", "api_key_env": "MY_TEAM_KEY", "top_p": 0.5},
        }
    )
    assert resolve_model(config, None) == ("gpt-4o-mini", {})
    assert resolve_model(config, "mistral/mistral-small") == ("mistral/mistral-small", {})
    with pytest.raises(kitaru.ConfigurationError, match="MY_TEAM_KEY") as caught:
        resolve_model(config, "keyed")
    assert "not set" in str(caught.value)
    monkeypatch.setenv("MY_TEAM_KEY", "sk-team-0123456789")
    assert resolve_model(config, "keyed") == (
        "openai/gpt-4o",
        {"top_p": 0.5, "api_key": "sk-team-0123456789"},
    )
    with pytest.raises(kitaru.ConfigurationError, match="no 'default' model alias"):
        resolve_model(resolve_config(), None)


async def test_a_flow_uses_its_runtimes_aliases(
    make_runtime: RuntimeFactory, scripted: Script
) -> None:
    scripted.add("via alias", "via default")

    @kitaru.flow
    async def f() -> str:
        a = await kitaru.llm("q", model="fast")
        b = await kitaru.llm("q")
        return f"{a}+{b}"

    aliases = {"fast": {"model": "scripted/fast", "temperature": 0}, "default": "scripted/d"}
    async with make_runtime(models=aliases) as rt:
        run = await rt.start(f)
        assert await run.result() == "via alias+via default"
        info = await run.info()
    assert [c["model"] for c in scripted.calls] == ["fast", "d"]  # litellm strips the provider
    assert [c.metadata["usage"]["model"] for c in info.checkpoints] == [
        "scripted/fast",
        "scripted/d",
    ]


async def test_a_missing_default_alias_fails_the_call_clearly(rt: kitaru.Runtime) -> None:
    @kitaru.flow
    async def f() -> str:
        return await kitaru.llm("q")

    run = await rt.start(f)
    with pytest.raises(kitaru.FlowFailed, match="no 'default' model alias"):
        await run.result()
    (entry,) = (await run.info()).checkpoints
    assert (entry.kind, entry.status, entry.attempts) == ("llm", "failed", 0)
