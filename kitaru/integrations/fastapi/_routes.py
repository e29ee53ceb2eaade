"""The HTTP API's routes: flows, runs, messages (the webhook), replay/retry/cancel, events."""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, Security
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ... import (
    ConfigurationError,
    Flow,
    InvalidMessage,
    ReplayError,
    RunFinished,
    RunInfo,
    RunNotFound,
    RunStatus,
    Runtime,
    SerializationError,
)
from ._inputs import bind_input, input_model
from ._models import (
    RUN_ID_PATTERN,
    Error,
    FlowOut,
    MessageAccepted,
    MessageIn,
    ReplayIn,
    RunPage,
    RunSummary,
    StartRun,
    ValidationErrors,
)
from ._security import DEFAULT_MAX_BODY, guarded_route_class
from ._sse import HEADERS, frames
from .events import Cursor, run_events, runs_events, snapshot_events

__all__ = ("CLOSING_KEY", "RUNTIME_KEY", "RuntimeDep", "get_runtime", "router")

#: Where the lifespan puts the open runtime (lifespan state and ``app.state``).
RUNTIME_KEY = "kitaru_runtime"

_EVENTS_DOC = """Server-sent events of one run, oldest first.

Types: `checkpoint` (a journal entry finished: its CheckpointInfo), `message`
(a wait consumed a message: topic, message_id, sender, value), `wait` (a new
pending wait: question, JSON schema, deadline, position) and `status` (the
run's status changed; `output` when completed, `error` when failed). Each
event's `id` is a cursor: reconnect with `Last-Event-ID` (or
`?last_event_id=`) to get only the events not seen, from any server sharing
the store. The stream ends after the run's finished status; reconnecting
when nothing is new answers 204 (browsers then stop reconnecting).
"""

_SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An event stream (text/event-stream).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    204: {"description": "Nothing new after Last-Event-ID, and the run has finished."},
    404: {"model": Error, "description": "No such run."},
}


def get_runtime(request: Request) -> Runtime:
    """The runtime the app's kitaru lifespan opened (a FastAPI dependency).

    Raises:
        HTTPException: 503 when no kitaru lifespan runs for this app.
    """
    rt = getattr(request.state, RUNTIME_KEY, None) or getattr(request.app.state, RUNTIME_KEY, None)
    if not isinstance(rt, Runtime):
        raise HTTPException(
            503,
            "no kitaru runtime is open for this app: create the app with "
            "FastAPI(lifespan=kitaru.integrations.fastapi.lifespan(flows=[...]))",
        )
    return rt


#: ``rt: RuntimeDep`` in a route's parameters gives it the app's open runtime.
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _not_found(exc: RunNotFound) -> HTTPException:
    return HTTPException(404, str(exc))


def _invalid(loc: Sequence[str | int], msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": list(loc), "msg": msg, "type": kind}])


def _errors_of(exc: ValidationError, prefix: Sequence[str]) -> RequestValidationError:
    return RequestValidationError(
        [
            {"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
    )


#: ``app.state`` flag set when the server shuts down, so event streams end.
CLOSING_KEY = "kitaru_closing"


def _stopping(request: Request) -> Callable[[], bool]:
    state = request.app.state
    return lambda: bool(getattr(state, CLOSING_KEY, False))


def _run_url(request: Request, run_id: str) -> str:
    return str(request.url_for("kitaru_get_run", run_id=run_id))


def router(
    *,
    flows: Sequence[Flow[Any, Any]] | None = None,
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    poll_interval: float = 0.25,
    keepalive: float = 15.0,
) -> APIRouter:
    """The kitaru HTTP API as a router; mount it with ``app.include_router(router(), prefix=...)``.

    Args:
        flows: the flows ``POST /flows/{name}/runs`` may start, each with a
            typed request schema in the OpenAPI document. Default: the flows
            the runtime hosts (``lifespan(flows=...)``). Runs of a flow the
            runtime hosts execute in this process; runs of a flow listed here
            but not hosted are submitted (:meth:`kitaru.Runtime.submit`) for
            the workers that host it, so an API service need not execute
            anything itself.
        token: bearer token every request must carry; default
            ``KITARU_API_TOKEN`` from the environment; no token means no
            authentication (put the API behind your own).
        max_body: request body limit in bytes (413 beyond).
        poll_interval: seconds between looks at the store for changes made by
            other processes, for event streams.
        keepalive: seconds of silence after which an event stream sends a comment.
    """
    if token is None:
        token = os.environ.get("KITARU_API_TOKEN") or None
    exposed = None if flows is None else {f.name: f for f in flows}
    bearer = HTTPBearer(auto_error=False, description="KITARU_API_TOKEN of the server")
    api = APIRouter(
        route_class=guarded_route_class(token=token, max_body=max_body),
        dependencies=[Security(bearer)] if token else [],
        responses={
            401: {"model": Error, "description": "No bearer token (a token is configured)."},
            403: {"model": Error, "description": "Wrong token, or a cross-site request."},
        },
    )

    def startable(rt: Runtime) -> dict[str, Flow[Any, Any]]:
        if exposed is not None:
            return exposed
        return {name: f for name, f in rt.flows.items() if isinstance(f, Flow)}

    def find_flow(rt: Runtime, name: str) -> Flow[Any, Any]:
        found = startable(rt).get(name)
        if found is None:
            known = ", ".join(sorted(startable(rt))) or "none"
            raise HTTPException(404, f"no flow named {name!r} can be started here (flows: {known})")
        return found

    async def start(
        rt: Runtime,
        flow: Flow[Any, Any],
        data: BaseModel,
        run_id: str | None,
        request: Request,
        response: Response,
    ) -> RunInfo:
        args, kwargs = bind_input(flow, data)
        if run_id is not None:
            try:
                existing = await rt.get_run(run_id)
            except RunNotFound:
                pass
            else:
                if existing.flow != flow.name:
                    raise HTTPException(
                        409,
                        f"run id {run_id!r} already belongs to flow {existing.flow!r}; "
                        "choose another run id",
                    )
                response.status_code = 200
                response.headers["Location"] = _run_url(request, run_id)
                return existing
        # A flow this runtime hosts runs here; one it only exposes
        # (router(flows=...)) is left for the workers that host it.
        begin = rt.start if flow.name in rt.flows else rt.submit
        try:
            handle = await begin(flow, *args, run_id=run_id, **kwargs)
        except TypeError as exc:
            raise _invalid(["body", "input"], str(exc), "arguments") from None
        except SerializationError as exc:
            raise _invalid(["body", "input"], str(exc), "serialization") from None
        except ConfigurationError as exc:
            raise HTTPException(409, str(exc)) from None
        response.headers["Location"] = _run_url(request, handle.id)
        return await rt.get_run(handle.id)

    start_responses: dict[int | str, dict[str, Any]] = {
        200: {"model": RunInfo, "description": "The run id existed: that run."},
        404: {"model": Error, "description": "No startable flow of that name."},
        409: {"model": Error, "description": "The run id belongs to another flow."},
        422: {"model": ValidationErrors, "description": "The input does not fit the flow."},
    }

    @api.get("/flows", response_model=list[FlowOut], name="kitaru_flows")
    async def list_flows(rt: RuntimeDep) -> list[FlowOut]:
        """The flows this API can start, with the JSON Schema of their input."""
        return [
            FlowOut(
                name=name,
                doc=inspect.getdoc(f.fn),
                input_schema=input_model(f).model_json_schema(),
            )
            for name, f in sorted(startable(rt).items())
        ]

    for flow in exposed.values() if exposed is not None else ():
        _typed_start_route(api, flow, start, start_responses)

    @api.post(
        "/flows/{name}/runs",
        status_code=201,
        response_model=RunInfo,
        responses=start_responses,
        name="kitaru_start_run",
    )
    async def start_run(
        name: str, body: StartRun, rt: RuntimeDep, request: Request, response: Response
    ) -> RunInfo:
        """Start a run of a flow; its arguments are checked against the flow's signature."""
        flow = find_flow(rt, name)
        try:
            data = input_model(flow).model_validate(body.input)
        except ValidationError as exc:
            raise _errors_of(exc, ["body", "input"]) from None
        return await start(rt, flow, data, body.run_id, request, response)

    @api.get("/runs", response_model=RunPage, name="kitaru_list_runs")
    async def list_runs(
        rt: RuntimeDep,
        status: RunStatus | None = None,
        flow: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> RunPage:
        """Runs, newest first, filtered by status and flow."""
        records = await rt.store.list_runs(
            status=None if status is None else status.value, flow=flow, limit=limit, before=cursor
        )
        counts = await rt.store.journal_counts([r.id for r in records])
        runs = [RunSummary.of(r, checkpoints=counts.get(r.id, 0)) for r in records]
        next_cursor = runs[-1].id if len(runs) == limit else None
        return RunPage(runs=runs, next_cursor=next_cursor)

    @api.get(
        "/runs/{run_id}",
        response_model=RunInfo,
        responses={404: {"model": Error}},
        name="kitaru_get_run",
    )
    async def get_run(run_id: str, rt: RuntimeDep) -> RunInfo:
        """Everything known about a run: status, checkpoints, pending wait, usage, output, error."""
        try:
            return await rt.get_run(run_id)
        except RunNotFound as exc:
            raise _not_found(exc) from None

    @api.post(
        "/runs/{run_id}/messages",
        status_code=202,
        response_model=MessageAccepted,
        responses={
            404: {"model": Error, "description": "No such run."},
            409: {"model": Error, "description": "The run has finished."},
            422: {
                "model": ValidationErrors,
                "description": "The payload does not fit the pending wait (nothing stored).",
            },
        },
        name="kitaru_send_message",
    )
    async def send_message(
        run_id: str,
        body: MessageIn,
        rt: RuntimeDep,
        idempotency_key: Annotated[
            str | None, Header(min_length=1, max_length=200, description="Sets the message key.")
        ] = None,
    ) -> MessageAccepted:
        """Put a message in a run's mailbox: the webhook that answers a pending wait."""
        try:
            message_id = await rt.send(
                run_id, body.payload, topic=body.topic, key=body.key or idempotency_key
            )
        except InvalidMessage as exc:
            raise _invalid(["body", "payload"], str(exc), "invalid_message") from None
        except SerializationError as exc:
            raise _invalid(["body", "payload"], str(exc), "serialization") from None
        except RunNotFound as exc:
            raise _not_found(exc) from None
        except RunFinished as exc:
            raise HTTPException(409, str(exc)) from None
        return MessageAccepted(run_id=run_id, message_id=message_id, topic=body.topic)

    @api.post(
        "/runs/{run_id}/replay",
        status_code=201,
        response_model=RunInfo,
        responses={
            404: {"model": Error},
            422: {
                "model": ValidationErrors,
                "description": "Nothing to replay from, or an "
                "override does not fit (nothing created).",
            },
        },
        name="kitaru_replay_run",
    )
    async def replay_run(
        run_id: str,
        rt: RuntimeDep,
        request: Request,
        response: Response,
        body: ReplayIn | None = None,
    ) -> RunInfo:
        """Start a new run reusing this run's journal up to a checkpoint."""
        body = body or ReplayIn()
        try:
            handle = await rt.replay(
                run_id, from_checkpoint=body.from_checkpoint, overrides=body.overrides
            )
        except RunNotFound as exc:
            raise _not_found(exc) from None
        except ReplayError as exc:
            raise _invalid(["body"], str(exc), "replay") from None
        response.headers["Location"] = _run_url(request, handle.id)
        return await rt.get_run(handle.id)

    @api.post(
        "/runs/{run_id}/retry",
        response_model=RunInfo,
        responses={404: {"model": Error}, 409: {"model": Error, "description": "Not failed."}},
        name="kitaru_retry_run",
    )
    async def retry_run(run_id: str, rt: RuntimeDep) -> RunInfo:
        """Resume a failed run in place from its failure point."""
        try:
            await rt.retry(run_id)
        except RunNotFound as exc:
            raise _not_found(exc) from None
        except ReplayError as exc:
            raise HTTPException(409, str(exc)) from None
        return await rt.get_run(run_id)

    @api.post(
        "/runs/{run_id}/cancel",
        response_model=RunInfo,
        responses={404: {"model": Error}, 409: {"model": Error, "description": "Finished."}},
        name="kitaru_cancel_run",
    )
    async def cancel_run(run_id: str, rt: RuntimeDep) -> RunInfo:
        """Cancel an unfinished run."""
        try:
            cancelled = await rt.cancel(run_id)
            info = await rt.get_run(run_id)
        except RunNotFound as exc:
            raise _not_found(exc) from None
        if not cancelled:
            raise HTTPException(
                409,
                f"run {run_id} is {info.status.value} already; only unfinished runs "
                "can be cancelled",
            )
        return info

    @api.get(
        "/runs/{run_id}/events",
        response_class=StreamingResponse,
        responses=_SSE_RESPONSE,
        description=_EVENTS_DOC,
        name="kitaru_run_events",
    )
    async def run_event_stream(
        run_id: str,
        rt: RuntimeDep,
        request: Request,
        last_event_id: Annotated[str | None, Header()] = None,
        last_event_id_query: Annotated[
            str | None, Query(alias="last_event_id", description="Same as Last-Event-ID.")
        ] = None,
    ) -> Response:
        """Server-sent events of a run (see the description)."""
        cursor = Cursor.parse(last_event_id or last_event_id_query)
        try:
            record, pending = await snapshot_events(rt, run_id, copy.deepcopy(cursor or Cursor()))
        except RunNotFound as exc:
            raise _not_found(exc) from None
        if cursor is not None and not pending and record.status in _FINISHED:
            return Response(status_code=204)
        events = run_events(
            rt,
            run_id,
            cursor,
            poll_interval=poll_interval,
            keepalive=keepalive,
            stopping=_stopping(request),
        )
        return StreamingResponse(frames(events), media_type="text/event-stream", headers=HEADERS)

    @api.get(
        "/events",
        response_class=StreamingResponse,
        responses={200: _SSE_RESPONSE[200]},
        name="kitaru_events",
    )
    async def all_events(rt: RuntimeDep, request: Request) -> Response:
        """Server-sent `run` events (a run's summary) whenever a run's status or wait changes."""
        events = runs_events(
            rt, poll_interval=poll_interval, keepalive=keepalive, stopping=_stopping(request)
        )
        return StreamingResponse(frames(events), media_type="text/event-stream", headers=HEADERS)

    @api.get("/openapi.json", include_in_schema=False, name="kitaru_openapi")
    async def openapi(request: Request) -> dict[str, Any]:
        """The app's OpenAPI document (behind the same token as the API)."""
        document: dict[str, Any] = request.app.openapi()
        return document

    return api


_FINISHED = ("completed", "failed", "cancelled")


StartFn = Callable[
    [Runtime, Flow[Any, Any], BaseModel, str | None, Request, Response], Awaitable[RunInfo]
]


def _typed_start_route(
    api: APIRouter, flow: Flow[Any, Any], start: StartFn, responses: dict[int | str, dict[str, Any]]
) -> None:
    """``POST /flows/<name>/runs`` with the flow's own input model in the OpenAPI document."""
    model = input_model(flow)
    required = any(f.is_required() for f in model.model_fields.values())
    body_model: type[BaseModel] = create_model(
        f"Start{model.__name__.removesuffix('Input')}Run",
        __config__=ConfigDict(extra="forbid"),
        input=(model, Field(...) if required else Field(default_factory=model)),
        run_id=(str | None, Field(default=None, pattern=RUN_ID_PATTERN)),
    )

    async def endpoint(body: Any, rt: Runtime, request: Request, response: Response) -> RunInfo:
        return await start(rt, flow, body.input, body.run_id, request, response)

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body_model),
            inspect.Parameter("rt", inspect.Parameter.KEYWORD_ONLY, annotation=RuntimeDep),
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
            inspect.Parameter("response", inspect.Parameter.KEYWORD_ONLY, annotation=Response),
        ],
        return_annotation=RunInfo,
    )
    endpoint.__doc__ = f"Start a run of flow {flow.name!r}."
    api.add_api_route(
        f"/flows/{flow.name}/runs",
        endpoint,
        methods=["POST"],
        status_code=201,
        response_model=RunInfo,
        responses=responses,
        name=f"kitaru_start_{flow.name}",
        summary=f"Start {flow.name}",
        description=inspect.getdoc(flow.fn) or f"Start a run of flow {flow.name!r}.",
    )
