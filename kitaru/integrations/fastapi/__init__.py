"""kitaru in FastAPI services: a lifespan that hosts flows, and an HTTP API router.

Needs the extra: ``pip install 'kitaru[fastapi]'``. ::

    from fastapi import FastAPI
    from kitaru.integrations.fastapi import lifespan, router

    app = FastAPI(lifespan=lifespan(flows=[approval]))
    app.include_router(router(), prefix="/kitaru")

    @app.post("/orders")
    async def order(rt: RuntimeDep) -> dict[str, str]:   # the open kitaru.Runtime
        run = await rt.start(approval, "order")
        return {"run": run.id}

Routes (under the prefix): ``GET /flows``; ``POST /flows/{name}/runs``;
``GET /runs``, ``GET /runs/{id}``; ``POST /runs/{id}/messages`` (the webhook
that answers a wait); ``POST /runs/{id}/replay``, ``/retry``, ``/cancel``;
``GET /runs/{id}/events`` and ``GET /events`` (server-sent events).
:func:`create_app` builds the app ``kitaru serve`` runs: the API under
``/api`` and the dashboard at ``/``. ``kitaru serve`` (also
``python -m kitaru.integrations.fastapi``) serves it; its command line belongs
to the ``kitaru`` command, so this package no longer exports a ``main``
(the entry point is ``kitaru.integrations.fastapi.__main__.main``).
"""

try:
    import fastapi as _fastapi  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kitaru.integrations.fastapi needs FastAPI and uvicorn: pip install 'kitaru[fastapi]'"
    ) from _exc

from ._app import create_app as create_app
from ._app import lifespan as lifespan
from ._dashboard import dashboard_router as dashboard_router
from ._routes import RuntimeDep as RuntimeDep
from ._routes import get_runtime as get_runtime
from ._routes import router as router
from ._security import HostGuard as HostGuard

__all__ = (
    "HostGuard",
    "RuntimeDep",
    "create_app",
    "dashboard_router",
    "get_runtime",
    "lifespan",
    "router",
)
