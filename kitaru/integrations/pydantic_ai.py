"""Durable PydanticAI agents: each model request and tool call inside a flow is recorded once.

Needs the extra: ``pip install 'kitaru[pydantic-ai]'``. ::

    from pydantic_ai import Agent
    from kitaru.integrations.pydantic_ai import KitaruAgent

    agent = Agent("openai:gpt-4o-mini", name="support", instructions="Be brief.")
    durable = KitaruAgent(agent)

    @kitaru.flow
    async def answer(question: str) -> str:
        result = await durable.run(question)
        return result.output

Inside a flow, a run of the wrapped agent is a sequence of durable calls:

- each **model request** is a journal entry of kind ``llm`` named
  ``"<agent>.request"``: the ``ModelResponse`` is recorded, its tokens and
  cost (PydanticAI's price data; unknown models record tokens only) count on
  the run and against its budget (:class:`kitaru.BudgetExceeded` before a
  request when it is spent), and transient provider errors are retried with
  the runtime's ``llm_retries`` / ``llm_backoff``, as for ``kitaru.llm``;
- each **tool call** is a checkpoint named ``"<agent>.tool.<tool>"``: the tool
  runs once per run and its result is recorded as JSON (the live call gets the
  same JSON form a replay gets). The tool call id is recorded too: a replay
  whose calls come back in another order is a :class:`kitaru.NonDeterminismError`,
  never a silent mix-up.

A replayed or recovered run therefore re-executes the agent without calling
the model or the tools again: PydanticAI's own loop runs over the recorded
responses. ``agent.run_stream`` and event stream handlers work in a flow, but
the stream is replayed from the recorded response (events arrive when the
request is complete). Inside a checkpoint body the agent runs live, and its
model usage is summed into the checkpoint's; outside a flow it runs as it
would unwrapped.

Limits: tools that raise PydanticAI's deferral exceptions (``CallDeferred``,
``ApprovalRequired``), or return objects whose meaning is lost as JSON
(``ToolReturn``, binary content), should be named in ``exclude_tools``: they
run live on every execution. A model request that failed is replayed as
:class:`kitaru.CheckpointFailed` when its exception cannot be rebuilt from the
journal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

try:
    from pydantic_ai.agent import AbstractAgent
    from pydantic_ai.agent.wrapper import WrapperAgent
    from pydantic_ai.messages import ModelMessage, ModelResponse
    from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.settings import ModelSettings
    from pydantic_ai.tools import AgentDepsT, RunContext
    from pydantic_ai.toolsets import AbstractToolset, WrapperToolset
    from pydantic_ai.toolsets.abstract import ToolsetTool
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kitaru.integrations.pydantic_ai needs PydanticAI: pip install 'kitaru[pydantic-ai]'"
    ) from _exc

from .._config import RuntimeConfig
from .._errors import ConfigurationError, NonDeterminismError
from .._llm._durable import AttemptLog, journaled, live_in_checkpoint
from .._llm._retries import backoff_of, call_with_retries
from .._tracing import checkpoint_span
from ..journal._budget import CallUsage
from ..journal._context import CheckpointFrame, FlowFrame, frame_var
from ..journal._durable import Call, durable
from ..journal._execution import Execution
from ..journal._failures import describe_error
from ..storage.serde import codec_for, loads_plain

__all__ = ("KitaruAgent", "KitaruModel", "KitaruToolset")

_RESPONSE = codec_for(ModelResponse)
_RESULT = codec_for(Any)


class KitaruModel(WrapperModel):
    """A PydanticAI model whose requests are durable ``llm`` calls when made in a flow."""

    def __init__(self, wrapped: Model | str, *, prefix: str = "agent") -> None:
        super().__init__(wrapped)
        #: Journal names are ``f"{prefix}.request"``.
        self.prefix = prefix

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """Record the response in a flow (or replay it); elsewhere just ask the model."""
        once = _Once(super().request, messages, model_settings, model_request_parameters)
        frame = frame_var.get()
        if isinstance(frame, FlowFrame):
            execution = frame.execution
            position = execution.take_position()
            response: ModelResponse = await journaled(
                execution,
                position,
                f"{self.prefix}.request",
                codec=_RESPONSE,
                live=self._live(once, execution.host.config),
                span_name=f"chat {self.model_name}",
                span_attributes={
                    **self._attributes(),
                    "kitaru.run_id": execution.run_id,
                    "kitaru.position": position,
                },
            )
            return response
        if isinstance(frame, CheckpointFrame):
            live = self._live(once, frame.execution.host.config)
            result: ModelResponse = await live_in_checkpoint(
                frame, live, f"chat {self.model_name}", self._attributes()
            )
            return result
        return await once()

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        """In a flow, a recorded (whole) response replayed as a stream; elsewhere a live stream."""
        if frame_var.get() is None:
            async with super().request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as stream:
                yield stream
            return
        try:
            from pydantic_ai.models import CompletedStreamedResponse
        except ImportError:  # pragma: no cover - older PydanticAI
            raise ConfigurationError(
                "streaming a durable agent inside a flow needs a newer PydanticAI "
                "(pip install -U 'kitaru[pydantic-ai]'); use agent.run() instead"
            ) from None
        response = await self.request(messages, model_settings, model_request_parameters)
        yield CompletedStreamedResponse(
            response, model_request_parameters=model_request_parameters, replay_events=True
        )

    def _attributes(self) -> dict[str, Any]:
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": self.system,
            "gen_ai.request.model": self.model_name,
            "kitaru.llm.name": f"{self.prefix}.request",
        }

    def _live(
        self, once: Callable[[], Awaitable[ModelResponse]], config: RuntimeConfig
    ) -> Callable[[AttemptLog], Awaitable[tuple[ModelResponse, bytes]]]:
        async def live(log: AttemptLog) -> tuple[ModelResponse, bytes]:
            response = await call_with_retries(
                once, log, retries=config.llm_retries, backoff=backoff_of(config)
            )
            log.usage.add(_usage_of(response))
            log.attributes["gen_ai.response.model"] = response.model_name
            data = _RESPONSE.dump(response, what="model response")
            loaded: ModelResponse = _RESPONSE.load(data, what="model response")
            return loaded, data

        return live


@dataclass(slots=True)
class _Once:
    """One model request, callable again for a retry."""

    fn: Callable[..., Awaitable[ModelResponse]]
    messages: list[ModelMessage]
    settings: ModelSettings | None
    parameters: ModelRequestParameters

    async def __call__(self) -> ModelResponse:
        return await self.fn(self.messages, self.settings, self.parameters)


def _usage_of(response: ModelResponse) -> CallUsage:
    cost: float | None
    try:
        cost = float(response.cost().total_price)
    except Exception:
        cost = None  # no price known for this model (or no usage reported)
    return CallUsage(
        input_tokens=int(response.usage.input_tokens or 0),
        output_tokens=int(response.usage.output_tokens or 0),
        cost_usd=cost,
        model=response.model_name,
    )


@dataclass
class KitaruToolset(WrapperToolset[AgentDepsT]):
    """A toolset whose tool calls are checkpoints when made in a flow."""

    prefix: str = "agent"
    #: Tools that run live on every execution (not recorded).
    exclude: frozenset[str] = field(default_factory=frozenset)

    async def call_tool(
        self,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[AgentDepsT],
        tool: ToolsetTool[AgentDepsT],
    ) -> Any:
        """Record the tool's result in a flow (or replay it); elsewhere just call it."""
        frame = frame_var.get()
        if not isinstance(frame, FlowFrame) or name in self.exclude:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        execution = frame.execution
        position = execution.take_position()

        async def body() -> Any:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)

        return await _tool_call(
            execution, position, f"{self.prefix}.tool.{name}", ctx.tool_call_id, body
        )


async def _tool_call(
    execution: Execution,
    position: int,
    name: str,
    call_id: str | None,
    body: Callable[[], Awaitable[Any]],
) -> Any:
    """A tool call as a checkpoint entry, checked against the recorded tool call id."""
    entry = execution.recorded(position, name, "checkpoint")
    if entry is not None:
        recorded_id = (loads_plain(entry.metadata) or {}).get("tool_call_id")
        if recorded_id is not None and call_id is not None and recorded_id != call_id:
            raise NonDeterminismError(
                execution.run_id,
                position,
                f"checkpoint {name} (tool call {recorded_id})",
                f"checkpoint {name} (tool call {call_id})",
            )

    async def live(call: Call) -> Any:
        # The checkpoint's metadata is the entry's: usage of LLM calls made
        # inside the tool is summed there (and added to the run on commit).
        if call_id is not None:
            call.metadata["tool_call_id"] = call_id
        frame = CheckpointFrame(execution, position, name, call.metadata)
        token = frame_var.set(frame)
        try:
            with checkpoint_span(name, execution.run_id, position):
                execution.busy += 1
                try:
                    result = await body()
                finally:
                    execution.busy -= 1
            data = _RESULT.dump(result, what=lambda: f"the result of tool call {name!r}")
        except Exception as exc:
            call.errors.append(describe_error(exc))  # the one attempt, listed even if repeated
            raise
        finally:
            frame_var.reset(token)
        call.data = data
        return _RESULT.load(data, what="tool result")

    return await durable(
        execution,
        position,
        name,
        "checkpoint",
        live,
        codec=_RESULT,
        records_failures=True,
        label=f"tool call {name!r}",
    )


class KitaruAgent(WrapperAgent[AgentDepsT, Any]):
    """Wrap an existing PydanticAI agent so its runs inside a flow are durable.

    ``KitaruAgent(agent)`` runs like ``agent`` (``run``, ``iter``,
    ``run_stream``, ``run_sync`` outside flows). In a flow, each model request
    is a recorded ``llm`` call and each tool call a checkpoint, so a replayed or
    recovered run re-executes the agent without paying for either again.

    Args:
        wrapped: the agent (its model, tools and toolsets are used as they are).
        name: prefix of the journal names (``"<name>.request"``,
            ``"<name>.tool.<tool>"``); default: the agent's name, else
            ``"agent"``. Give agents of one flow distinct names.
        exclude_tools: names of tools that are not recorded and run live on
            every execution.
    """

    def __init__(
        self,
        wrapped: AbstractAgent[AgentDepsT, Any],
        *,
        name: str | None = None,
        exclude_tools: Collection[str] = (),
    ) -> None:
        super().__init__(wrapped)
        self.prefix = name or wrapped.name or "agent"
        self.exclude_tools = frozenset(exclude_tools)

    def _durable_toolset(self, toolset: AbstractToolset[AgentDepsT]) -> AbstractToolset[AgentDepsT]:
        if isinstance(toolset, KitaruToolset):
            return toolset
        return KitaruToolset(toolset, prefix=self.prefix, exclude=self.exclude_tools)

    def _durable_model(self, model: Any) -> KitaruModel:
        if isinstance(model, KitaruModel):
            return model
        if model is None:
            raise ConfigurationError(
                f"agent {self.prefix!r} has no model: give the Agent one, or pass model=... "
                "to run()"
            )
        return KitaruModel(model, prefix=self.prefix)

    @asynccontextmanager
    async def iter(self, user_prompt: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        """Like ``Agent.iter``, with the model and every toolset made durable."""
        model = self._durable_model(kwargs.pop("model", None) or self.wrapped.model)
        toolsets = [self._durable_toolset(t) for t in self.wrapped.toolsets]
        toolsets.extend(self._durable_toolset(t) for t in kwargs.pop("toolsets", None) or ())
        # The agent's own tools are in its function toolset (one of ``toolsets``,
        # wrapped): ``tools=[]`` keeps them from being offered a second time.
        with self.wrapped.override(model=model, toolsets=toolsets, tools=[]):
            async with self.wrapped.iter(user_prompt, **kwargs) as run:
                yield run
