"""Request guards of the HTTP API: bearer token, cross-site requests, body size, Host header.

The first three live in the router's route class, so they hold wherever the
router is mounted, and they run before FastAPI reads or validates anything:

- **token**: with a token configured, every API request carries
  ``Authorization: Bearer <token>``: none (or another scheme) is 401, a wrong
  one 403; compared in constant time.
- **cross-site requests**: without a token, a POST whose ``Origin`` (which a
  browser adds to cross-site requests) is not the server's own is 403, so a web
  page cannot make a visitor's browser cancel runs on a local dashboard. A
  reverse proxy in front must pass the ``Host`` header through.
- **body size**: a body over the limit is 413, whether or not it announces its
  length (it is read in chunks and abandoned at the limit); a POST body must
  be JSON (415 otherwise).

:class:`HostGuard` is ASGI middleware that ``kitaru serve`` adds when it runs
without a token on a loopback address: requests must name a loopback host, so
a web page cannot reach the API through a DNS name rebound to 127.0.0.1.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Collection, Coroutine
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = (
    "DEFAULT_MAX_BODY",
    "HostGuard",
    "guarded_route_class",
    "is_loopback",
    "loopback_hosts",
)

#: Default request body limit in bytes.
DEFAULT_MAX_BODY = 1024 * 1024
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_token(request: Request, token: str) -> Response | None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(
            401,
            "this API needs a token: send 'Authorization: Bearer <token>' "
            "(the value of KITARU_API_TOKEN on the server)",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(403, "the bearer token is not the one this server accepts")
    return None


def _check_origin(request: Request) -> Response | None:
    origin = request.headers.get("origin")
    if origin is None or request.method in _SAFE_METHODS:
        return None
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    if origin == "null" or parts.netloc.lower() != host.lower():
        return _error(
            403,
            f"cross-site request refused: Origin {origin} is not this server ({host}); "
            "call the API from the same origin or without a browser",
        )
    return None


async def _read_limited(request: Request, limit: int) -> bytes | Response:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return _error(413, f"request body too large: the limit is {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _error(413, f"request body too large: the limit is {limit} bytes")
    return bytes(body)


def _replaying(request: Request, body: bytes) -> Request:
    """A request whose body is ``body`` (already read), for FastAPI to parse."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()  # waits for the disconnect, like a drained body

    return Request(request.scope, receive)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def guarded_route_class(*, token: str | None, max_body: int) -> type[APIRoute]:
    """An ``APIRoute`` subclass that applies the guards before FastAPI sees the request."""

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                # A browser never adds a bearer token by itself, so with a token
                # a cross-site request cannot act for a visitor: Origin matters
                # only without one.
                denied = _check_token(request, token) if token else _check_origin(request)
                if denied is not None:
                    return denied
                if request.method in _SAFE_METHODS:
                    return await handler(request)
                body = await _read_limited(request, max_body)
                if isinstance(body, Response):
                    return body
                content_type = request.headers.get("content-type", "")
                if body and not _is_json(content_type):
                    return _error(
                        415,
                        "request bodies are JSON: send 'Content-Type: application/json'"
                        + (f" (got {content_type})" if content_type else ""),
                    )
                return await handler(_replaying(request, body))

            return guarded

    return GuardedRoute


class HostGuard:
    """ASGI middleware: only requests whose Host header is one of ``hosts`` (any port)."""

    def __init__(self, app: ASGIApp, hosts: Collection[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower().strip("[]") for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        if _host_name(host) not in self.hosts:
            response = _error(
                403,
                f"Host {host or '(none)'} is not served here: without KITARU_API_TOKEN this "
                "server answers only requests to a loopback address (127.0.0.1, localhost)",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """``host:port`` -> ``host``; ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def loopback_hosts(bind: str) -> set[str]:
    """Host names a loopback server answers to."""
    return {"127.0.0.1", "localhost", "::1", bind.lower().strip("[]")}
