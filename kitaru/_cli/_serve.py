"""``kitaru serve``: its arguments, and ``python -m kitaru.integrations.fastapi``.

The app and the server come from :mod:`kitaru.integrations.fastapi`
(:func:`~kitaru.integrations.fastapi.create_app`); this module turns the
command line into their arguments. Importing it needs the fastapi extra.

Security defaults: it binds 127.0.0.1. On any other address it refuses to
start unless ``KITARU_API_TOKEN`` is set, and then every API request must
carry ``Authorization: Bearer <token>``. Without a token it answers only
requests addressed to a loopback host name.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .. import ConfigurationError, Flow, KitaruError
from .._runtime._modules import load_flows
from ..integrations.fastapi import create_app
from ..integrations.fastapi._security import DEFAULT_MAX_BODY, loopback_hosts
from ..integrations.fastapi._serve import check_bind, serve_app

__all__ = ("add_serve_arguments", "main", "serve_command")

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
    """The options of ``python -m kitaru.integrations.fastapi`` besides ``--store`` and co."""
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


async def serve_command(args: argparse.Namespace) -> int:
    """Run ``kitaru serve`` until SIGINT/SIGTERM; returns the exit status.

    Raises:
        kitaru.ConfigurationError: a bad port, an open address without a
            token, or a module that cannot be imported or has no flows.
    """
    token = os.environ.get("KITARU_API_TOKEN") or None
    if not 0 <= args.port <= 65535:
        raise ConfigurationError(f"--port must be 0-65535, got {args.port}")
    check_bind(args.host, token)
    flows = load_flows(args.modules, Flow) if args.modules else []
    app = create_app(
        flows,
        token=token,
        max_body=args.max_body,
        dashboard=not args.no_dashboard,
        allowed_hosts=None if token else loopback_hosts(args.host),
        store=getattr(args, "store", None),
        artifacts=getattr(args, "artifacts", None),
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(sorted(f.name for f in flows)) or "none"
    sys.stderr.write(
        f"kitaru: serving flows {names} on http://{shown}:{args.port}/ "
        f"(API under /api{', token required' if token else ''}); Ctrl-C stops\n"
    )
    verbose = bool(getattr(args, "verbose", False))
    return await serve_app(app, host=args.host, port=args.port, verbose=verbose)


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
    try:
        result: int = anyio.run(serve_command, args)
    except KeyboardInterrupt:
        return 130
    except KitaruError as exc:
        sys.stderr.write(f"kitaru: error: {' '.join(str(exc).split())}\n")
        return 2
    return result
