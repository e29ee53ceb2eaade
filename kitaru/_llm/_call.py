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
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import anyio
import anyio.from_thread

from .._config import RuntimeConfig, resolve_config
from .._errors import SerializationError
from .._runtime._current import current_runtime
from .._tracing import Attributes
from ..journal._context import CheckpointFrame, FlowFrame, frame_var
from ..journal._failures import RETRY
from ..storage.serde import Codec, codec_for, describe_type
from ._durable import AttemptLog, journaled, live_in_checkpoint, live_outside
from ._models import content_of, load_litellm, resolve_model, usage_of
from ._retries import backoff_of, call_with_retries
from ._secrets import secrets_of
from ._structured import ask_for_json, parse_answer, reask

if TYPE_CHECKING:
    from ..journal._execution import Execution

__all__ = ("llm",)

T = TypeVar("T")

Messages = Sequence[Mapping[str, Any]]

#: Parameters of ``kitaru.llm`` that litellm never sees.
_STREAMING = ("stream", "stream_options")


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
            messages, params = ask_for_json(litellm, model, messages, params, codec)
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
            log.usage.add(usage_of(litellm, response, model))
            log.attributes["gen_ai.response.model"] = getattr(response, "model", None)
            hidden = getattr(response, "_hidden_params", None) or {}
            log.attributes["gen_ai.system"] = (
                hidden.get("custom_llm_provider") or log.attributes["gen_ai.system"]
            )
            text = content_of(response)
            if self.schema is None:
                return text, codec.dump(text, what="LLM answer")
            try:
                value = parse_answer(text, codec)
            except SerializationError as exc:
                log.errors.append(f"SerializationError: {exc}")
                if reasks >= self.schema_retries:
                    raise SerializationError(
                        f"the answer of {model} did not fit {describe_type(self.schema)} after "
                        f"{reasks + 1} tries: {exc}. Last answer: {text[:300]!r}. Describe the "
                        "expected JSON in the prompt, or allow more schema_retries"
                    ) from None
                reasks += 1
                messages = reask(messages, text, exc)
                continue
            data = codec.dump(value, what=lambda: f"the answer of {model}")
            if codec.exact is not None and type(value) is codec.exact:
                return value, data
            return codec.load(data, what="LLM answer"), data
