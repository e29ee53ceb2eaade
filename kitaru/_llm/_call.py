"""``kitaru.llm``: one LLM call through litellm, journaled like a checkpoint.

In flow code a call takes the next journal position when it is made and is
recorded as an entry of kind ``llm``: its answer (the text, or the value parsed
into ``schema``) is the entry's value and its usage (tokens, cost, latency,
model) the entry's ``"usage"`` metadata, added to the run's totals in the same
commit. A replayed or recovered run gets the recorded answer back and never
calls the provider again (nor imports litellm). Inside a checkpoint body the
call simply runs and its usage is summed into the checkpoint's; outside a flow
it simply runs.

A live call:

1. resolves the model: an alias from the runtime's ``models`` setting, or a
   litellm model string as given (``model=None`` means the alias ``default``);
2. is refused with :class:`kitaru.BudgetExceeded` when the run spent its
   budget (in flow code the refusal is recorded, so a replay raises it again);
3. calls ``litellm.acompletion``; transient provider errors (rate limit,
   timeout, connection error, 5xx) are retried with exponential backoff
   (``llm_retries`` times, ``llm_backoff`` seconds first), permanent ones
   (authentication, bad request, not found...) are not; every failed attempt
   is listed in the entry's ``"errors"``;
4. with ``schema``, parses the answer as JSON into that type (asking for
   JSON output through litellm's ``response_format`` when the model supports
   it, and in the system prompt always); an answer that does not validate is
   sent back with the validation error, ``schema_retries`` times at most.

API keys come from the provider's environment variables through litellm (or
from the variable an alias names with ``api_key_env``). Secret parameters and
the values of secret-looking environment variables are scrubbed from errors
before they are raised or recorded; parameters and prompts are never recorded.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import anyio
import anyio.from_thread
import anyio.to_thread

from .._config import RuntimeConfig, resolve_config
from .._errors import ConfigurationError, SerializationError
from .._runtime._current import current_runtime
from .._tracing import Attributes
from ..journal._budget import CallUsage
from ..journal._context import CheckpointFrame, FlowFrame, frame_var
from ..journal._failures import RETRY
from ..storage.serde import Codec, codec_for, describe_type
from . import _guard
from ._durable import (
    AttemptLog,
    backoff_of,
    call_with_retries,
    journaled,
    live_in_checkpoint,
    live_outside,
    secrets_of,
)

if TYPE_CHECKING:
    from types import ModuleType

    from ..journal._execution import Execution

__all__ = ("llm", "load_litellm", "resolve_model")

T = TypeVar("T")

Messages = Sequence[Mapping[str, Any]]

#: Parameters of ``kitaru.llm`` that litellm never sees.
_STREAMING = ("stream", "stream_options")


# -- the public function ---------------------------------------------------------------------


@overload
def llm(
    prompt_or_messages: str | Messages,
    *,
    model: str | None = None,
    system: str | None = None,
    schema: None = None,
    name: str = "llm",
    retries: int | None = None,
    schema_retries: int = 2,
    **params: Any,
) -> Awaitable[str]: ...


@overload
def llm(
    prompt_or_messages: str | Messages,
    *,
    model: str | None = None,
    system: str | None = None,
    schema: type[T],
    name: str = "llm",
    retries: int | None = None,
    schema_retries: int = 2,
    **params: Any,
) -> Awaitable[T]: ...


@overload
def llm(
    prompt_or_messages: str | Messages,
    *,
    model: str | None = None,
    system: str | None = None,
    schema: Any,
    name: str = "llm",
    retries: int | None = None,
    schema_retries: int = 2,
    **params: Any,
) -> Awaitable[Any]: ...


def llm(
    prompt_or_messages: str | Messages,
    *,
    model: str | None = None,
    system: str | None = None,
    schema: Any = None,
    name: str = "llm",
    retries: int | None = None,
    schema_retries: int = 2,
    **params: Any,
) -> Awaitable[Any]:
    """Call an LLM once through litellm; in a flow, the answer is recorded and never re-billed.

    ``await kitaru.llm("Summarise: ...", model="fast")`` returns the answer's
    text; with ``schema=Verdict`` (a pydantic model, dataclass, ``list[str]``,
    any type pydantic validates) it returns the answer parsed into that type.
    In a plain ``def`` flow or checkpoint, call it without ``await``: it blocks
    and returns the answer.

    Args:
        prompt_or_messages: the user prompt, or chat messages
            (``[{"role": "user", "content": "..."}, ...]``).
        model: a model alias (``[tool.kitaru.models]``, ``KITARU_MODEL_<ALIAS>``,
            ``kitaru.runtime(models=...)``) or a litellm model string such as
            ``"gpt-4o-mini"`` or ``"anthropic/claude-sonnet-4-5"``. ``None``: the
            alias ``default``.
        system: a system prompt, put before the messages.
        schema: parse and validate the answer into this type.
        name: the name recorded in the journal (replay overrides use it:
            ``overrides={"llm#2": "..."}``); the model may change without
            changing it.
        retries: retries after transient provider errors (default: the
            runtime's ``llm_retries``).
        schema_retries: how many times an answer that does not fit ``schema``
            is sent back to the model with the validation error.
        **params: passed to ``litellm.acompletion`` over the alias's defaults
            (``temperature``, ``max_tokens``, ``mock_response`` for offline
            runs, ...).

    Raises:
        kitaru.BudgetExceeded: the run has spent its token or cost budget.
        kitaru.SerializationError: the answer still did not fit ``schema``
            after ``schema_retries`` re-asks.
        kitaru.ConfigurationError: no model given and no ``default`` alias, or
            an alias's ``api_key_env`` variable is not set.
        litellm.exceptions.*: the provider's error, after retries for
            transient ones.
    """
    if retries is not None and retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if schema_retries < 0:
        raise ValueError(f"schema_retries must be >= 0, got {schema_retries}")
    for key in _STREAMING:
        if params.get(key):
            raise ValueError(
                f"kitaru.llm() does not stream ({key}=...): a recorded answer is a whole "
                "answer; call litellm directly inside a @checkpoint to stream"
            )
    call = _Call(
        messages=_messages(prompt_or_messages, system),
        model=model,
        schema=schema,
        name=name,
        retries=retries,
        schema_retries=schema_retries,
        params=params,
    )
    frame = frame_var.get()
    if isinstance(frame, FlowFrame):
        execution = frame.execution
        position = execution.take_position()
        run = functools.partial(call.in_flow, execution, position)
        if frame.in_sync_thread():
            return cast(Awaitable[Any], anyio.from_thread.run(run))
        return run()
    if isinstance(frame, CheckpointFrame):
        return cast(Awaitable[Any], _dispatch(functools.partial(call.in_checkpoint, frame)))
    return cast(Awaitable[Any], _dispatch(call.outside))


def _messages(prompt: str | Messages, system: str | None) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(
        isinstance(m, Mapping) and "role" in m for m in prompt
    ):
        messages = [dict(cast(Mapping[str, Any], m)) for m in prompt]
    else:
        raise TypeError(
            "kitaru.llm() takes a prompt string or a list of chat messages "
            f'([{{"role": "user", "content": "..."}}]), got {prompt!r}'
        )
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _dispatch(fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """The coroutine for async callers; its result for a worker thread (a sync body)."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        return anyio.from_thread.run(fn)
    return fn()


# -- litellm ---------------------------------------------------------------------------------


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


@dataclass(slots=True)
class _Call:
    """One ``kitaru.llm`` call as made; the model and parameters resolve when it goes live."""

    messages: list[dict[str, Any]]
    model: str | None
    schema: Any
    name: str
    retries: int | None
    schema_retries: int
    params: dict[str, Any]

    @property
    def codec(self) -> Codec:
        return codec_for(str if self.schema is None else self.schema)

    def _span(self) -> tuple[str, Attributes]:
        label = self.model or "default"
        return f"chat {label}", {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": label,
            "kitaru.llm.name": self.name,
        }

    async def in_flow(self, execution: Execution, position: int) -> Any:
        recorded = execution.journal.get(position)
        if recorded is None or recorded.status == RETRY:
            await load_litellm()  # before the call's clock starts: the first import takes seconds
        name, attributes = self._span()
        live = functools.partial(self._live, execution.host.config)
        return await journaled(
            execution,
            position,
            self.name,
            codec=self.codec,
            live=live,
            span_name=name,
            span_attributes={
                **attributes,
                "kitaru.run_id": execution.run_id,
                "kitaru.position": position,
            },
        )

    async def in_checkpoint(self, frame: CheckpointFrame) -> Any:
        name, attributes = self._span()
        live = functools.partial(self._live, frame.execution.host.config)
        return await live_in_checkpoint(frame, live, name, attributes)

    async def outside(self) -> Any:
        runtime = current_runtime()
        config = runtime.config if runtime is not None else resolve_config()
        name, attributes = self._span()
        return await live_outside(functools.partial(self._live, config), name, attributes)

    async def _live(self, config: RuntimeConfig, log: AttemptLog) -> tuple[Any, bytes]:
        model, params = resolve_model(config, self.model)
        params.update(self.params)
        secrets = secrets_of(params)
        litellm = await load_litellm()
        log.usage.model = model
        log.attributes["gen_ai.request.model"] = model
        log.attributes["gen_ai.system"] = model.partition("/")[0] if "/" in model else None
        messages = self.messages
        codec = self.codec
        if self.schema is not None:
            messages, params = _ask_for_json(litellm, model, messages, params, codec)
        retries = config.llm_retries if self.retries is None else self.retries
        backoff = backoff_of(config)
        reasks = 0
        while True:
            response: Any = await call_with_retries(
                functools.partial(litellm.acompletion, model=model, messages=messages, **params),
                log,
                retries=retries,
                backoff=backoff,
                secrets=secrets,
            )
            log.usage.add(_usage_of(litellm, response, model))
            log.attributes["gen_ai.response.model"] = getattr(response, "model", None)
            hidden = getattr(response, "_hidden_params", None) or {}
            log.attributes["gen_ai.system"] = (
                hidden.get("custom_llm_provider") or log.attributes["gen_ai.system"]
            )
            text = _content(response)
            if self.schema is None:
                return text, codec.dump(text, what="LLM answer")
            try:
                value = _parse(text, codec)
            except SerializationError as exc:
                log.errors.append(f"SerializationError: {exc}")
                if reasks >= self.schema_retries:
                    raise SerializationError(
                        f"the answer of {model} did not fit {describe_type(self.schema)} after "
                        f"{reasks + 1} tries: {exc}. Last answer: {text[:300]!r}. Describe the "
                        "expected JSON in the prompt, or allow more schema_retries"
                    ) from None
                reasks += 1
                messages = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": f"That answer is not valid: {exc}. Reply again with only "
                        "the corrected JSON value.",
                    },
                ]
                continue
            data = codec.dump(value, what=lambda: f"the answer of {model}")
            if codec.exact is not None and type(value) is codec.exact:
                return value, data
            return codec.load(data, what="LLM answer"), data


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


def _content(response: Any) -> str:
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError):
        return ""
    return "" if content is None else str(content)


def _usage_of(litellm: ModuleType, response: Any, model: str) -> CallUsage:
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


def _ask_for_json(
    litellm: ModuleType,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    codec: Codec,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and parameters that ask the model for JSON fitting ``codec``'s type."""
    schema = dict(codec.json_schema())
    if schema.get("type") != "object":
        # Structured-output APIs want an object at the top: wrap the value.
        defs = schema.pop("$defs", None)
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
        if defs:
            schema["$defs"] = defs
    instruction = (
        "Reply with a single JSON value and nothing else, matching this JSON Schema:\n"
        + json.dumps(schema)
    )
    if "response_format" not in params:
        params = dict(params)
        if _supports(litellm.supports_response_schema, model):
            title = re.sub(r"[^A-Za-z0-9_-]", "_", describe_type(codec.annotation))[:64]
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": title or "answer", "schema": schema, "strict": False},
            }
        elif "response_format" in (_supported_params(litellm, model) or ()):
            params["response_format"] = {"type": "json_object"}
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{instruction}".strip()
        return [first, *messages[1:]], params
    return [{"role": "system", "content": instruction}, *messages], params


def _supports(check: Callable[..., Any], model: str) -> bool:
    try:
        return bool(check(model=model))
    except Exception:
        return False


def _supported_params(litellm: ModuleType, model: str) -> list[str] | None:
    try:
        found = litellm.get_supported_openai_params(model=model)
    except Exception:
        return None
    return list(found) if found else None


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _parse(text: str, codec: Codec) -> Any:
    """The answer as ``codec``'s type; a :class:`SerializationError` says why it does not fit."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise SerializationError(f"the answer is not JSON ({exc})") from None
    if (
        isinstance(data, dict)
        and set(data) == {"value"}
        and codec.json_schema().get("type") != ("object")
    ):
        data = data["value"]
    return codec.validate(json.dumps(data), what="the answer")
