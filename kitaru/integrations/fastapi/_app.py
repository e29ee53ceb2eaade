"""The lifespan that hosts flows for an app's life, and the app ``kitaru serve`` runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ... import Flow, __version__, runtime
from ._dashboard import dashboard_router
from ._routes import RUNTIME_KEY, router
from ._security import DEFAULT_MAX_BODY, HostGuard

__all__ = ("create_app", "lifespan")

AppLifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def lifespan(
    *,
    flows: Sequence[Flow[Any, Any]] = (),
    app_lifespan: AppLifespan | None = None,
    **settings: Any,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A FastAPI lifespan that opens ``kitaru.runtime(flows=flows, **settings)`` for the app's life.

    Use it as ``FastAPI(lifespan=lifespan(flows=[my_flow]))``. The runtime
    opens before ``app_lifespan`` (the app's own lifespan, if any) starts and
    closes after it ends, so the app's startup and shutdown code can use it;
    the state that ``app_lifespan`` yields is kept. Routes get the runtime
    with :func:`get_runtime` (``rt: Runtime = Depends(get_runtime)``).

    Args:
        flows: flows the app hosts; their unfinished runs resume at startup.
        app_lifespan: the app's own lifespan, run inside this one.
        **settings: ``store``, ``artifacts`` and any other ``kitaru.runtime`` setting.
    """

    @asynccontextmanager
    async def app_life(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with runtime(flows=flows, **settings) as rt:
            state = getattr(app, "state", None)
            if state is not None:
                setattr(state, RUNTIME_KEY, rt)
            try:
                if app_lifespan is None:
                    yield {RUNTIME_KEY: rt}
                else:
                    async with app_lifespan(app) as inner:
                        yield {**(inner or {}), RUNTIME_KEY: rt}
            finally:
                if state is not None and getattr(state, RUNTIME_KEY, None) is rt:
                    delattr(state, RUNTIME_KEY)

    return app_life


def create_app(
    flows: Sequence[Flow[Any, Any]] = (),
    *,
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    dashboard: bool = True,
    allowed_hosts: Collection[str] | None = None,
    api_prefix: str = "/api",
    **settings: Any,
) -> FastAPI:
    """The app of ``kitaru serve``: the API under ``api_prefix`` and the dashboard at ``/``.

    Args:
        flows: flows hosted and startable through the API.
        token: bearer token for every API request (default ``KITARU_API_TOKEN``).
        max_body: request body limit in bytes.
        dashboard: serve the dashboard at ``/``.
        allowed_hosts: when given, only requests whose Host header names one of
            these (any port) are answered (``kitaru serve`` passes the loopback
            names when it runs without a token).
        api_prefix: where the API is mounted.
        **settings: ``store``, ``artifacts`` and other ``kitaru.runtime`` settings.
    """
    app = FastAPI(
        title="kitaru",
        version=__version__,
        description="Durable runs of kitaru flows: start, inspect, answer waits, replay, cancel.",
        lifespan=lifespan(flows=flows, **settings),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served under the API prefix, behind the token
    )
    app.include_router(
        router(flows=flows, token=token, max_body=max_body), prefix=api_prefix, tags=["kitaru"]
    )
    if dashboard:
        app.include_router(dashboard_router(api_prefix=api_prefix))
    if allowed_hosts is not None:
        app.add_middleware(HostGuard, hosts=allowed_hosts)
    return app
