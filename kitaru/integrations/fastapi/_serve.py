"""Serving an app on uvicorn, the way ``kitaru serve`` does; the rule for the bind address.

The command line itself (its arguments, loading the flows' modules) lives in
the ``kitaru`` command; this module only knows apps, addresses and tokens.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from ... import ConfigurationError
from ._routes import CLOSING_KEY
from ._security import is_loopback

__all__ = ("check_bind", "serve_app")


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token.

    Raises:
        kitaru.ConfigurationError: ``host`` is not a loopback address and ``token`` is empty.
    """
    if not token and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve on {host} without a token: anyone who can reach it could start, "
            "answer and cancel runs. Set KITARU_API_TOKEN to a long random secret (clients "
            "send 'Authorization: Bearer <token>'), or bind 127.0.0.1"
        )


class _Server(uvicorn.Server):
    """uvicorn's server that ends event streams on shutdown and exits 0 on a signal."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Event streams never end on their own: tell them to, so the
        # graceful shutdown does not wait for browsers to leave.
        setattr(self._app.state, CLOSING_KEY, True)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Like uvicorn's, without raising the signal again once the server
        # stopped: a clean stop exits 0, as `kitaru worker` does.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


async def serve_app(app: Any, *, host: str, port: int, verbose: bool = False) -> int:
    """Serve ``app`` (from :func:`create_app`) on uvicorn until SIGINT/SIGTERM.

    Returns the exit status: 0 after a clean stop, 2 when the server did not
    start (the address is taken, for example).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        ws="none",
        log_level="debug" if verbose else "info",
        access_log=verbose,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, app)
    await server.serve()
    return 0 if server.started else 2
