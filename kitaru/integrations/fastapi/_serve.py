"""``kitaru serve``: the HTTP API and the dashboard for the flows of some modules, on uvicorn.

Security defaults: it binds 127.0.0.1. On any other address it refuses to
start unless ``KITARU_API_TOKEN`` is set, and then every API request must
carry ``Authorization: Bearer <token>``. Without a token it answers only
requests addressed to a loopback host name.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from ..._errors import ConfigurationError, KitaruError
from ._app import create_app
from ._routes import CLOSING_KEY
from ._security import DEFAULT_MAX_BODY, is_loopback, loopback_hosts

__all__ = ("add_serve_arguments", "main", "serve_command")

log = logging.getLogger("kitaru.serve")

DESCRIPTION = (
    "Serve the HTTP API (under /api) and the dashboard (at /) with uvicorn, hosting every "
    "@kitaru.flow among the globals of each MODULE (dotted name or .py path). Binds "
    "127.0.0.1 unless --host says otherwise; any other address needs KITARU_API_TOKEN, which "
    "every API request must then carry as 'Authorization: Bearer <token>'."
)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bytes, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``kitaru serve`` (``--store``/``--artifacts`` come from the CLI)."""
    parser.add_argument("modules", nargs="*", metavar="MODULE", help="module name or .py path")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--max-body",
        type=_size,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help=f"request body limit (default {DEFAULT_MAX_BODY})",
    )
    parser.add_argument("--no-dashboard", action="store_true", help="serve the API only")


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


async def serve_command(args: argparse.Namespace) -> int:
    """Run ``kitaru serve`` until SIGINT/SIGTERM; returns the exit status."""
    import uvicorn

    from ..._cli._worker import load_flows

    token = os.environ.get("KITARU_API_TOKEN") or None
    if not 0 <= args.port <= 65535:
        raise ConfigurationError(f"--port must be 0-65535, got {args.port}")
    check_bind(args.host, token)
    flows = load_flows(args.modules) if args.modules else []
    app = create_app(
        flows,
        token=token,
        max_body=args.max_body,
        dashboard=not args.no_dashboard,
        allowed_hosts=None if token else loopback_hosts(args.host),
        store=getattr(args, "store", None),
        artifacts=getattr(args, "artifacts", None),
    )
    verbose = bool(getattr(args, "verbose", False))
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        ws="none",
        log_level="debug" if verbose else "info",
        access_log=verbose,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Event streams never end on their own: tell them to, so the
            # graceful shutdown does not wait for browsers to leave.
            setattr(app.state, CLOSING_KEY, True)
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

    server = Server(config)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(sorted(f.name for f in flows)) or "none"
    sys.stderr.write(
        f"kitaru: serving flows {names} on http://{shown}:{args.port}/ "
        f"(API under /api{', token required' if token else ''}); Ctrl-C stops\n"
    )
    await server.serve()
    return 0 if server.started else 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kitaru.integrations.fastapi [--store URL] [--host H] [--port P] MODULE...``."""
    import anyio

    parser = argparse.ArgumentParser(prog="kitaru serve", description=DESCRIPTION)
    parser.add_argument("--store", metavar="URL", help="run store URL (default: KITARU_STORE)")
    parser.add_argument("--artifacts", metavar="URL", help="artifact store (KITARU_ARTIFACTS)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests and details")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..._cli._commands import UsageError

    try:
        result: int = anyio.run(serve_command, args)
    except KeyboardInterrupt:
        return 130
    except (KitaruError, UsageError) as exc:
        sys.stderr.write(f"kitaru: error: {' '.join(str(exc).split())}\n")
        return 2
    return result
