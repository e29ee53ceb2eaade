"""The command line: parse it, run the command, turn expected errors into one line.

Exit statuses: 0 done; 2 an expected error (a kitaru error, a bad argument, an
unknown run, a store that cannot be opened), printed as one line
``kitaru: error: ...`` on stderr with nothing changed; 1 a bug (traceback
shown); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import KitaruError, RunStatus
from ._commands import COMMANDS, UsageError

__all__ = ("build_parser", "main")

PROG = "kitaru"

_DESCRIPTION = """\
Inspect and steer durable runs, and host flows.

The store is chosen like the runtime chooses it: --store / --artifacts, else
KITARU_STORE / KITARU_ARTIFACTS, else kitaru.toml (or [tool.kitaru] in
pyproject.toml) in the current folder, else ./.kitaru/. A RUN is a run id or
any unique prefix of one."""

_EPILOG = """\
examples:
  kitaru runs --status waiting
  kitaru show 3f2a9c1e0b7d
  kitaru send 3f2a9c1e0b7d true
  kitaru replay 3f2a9c1e0b7d --from write_draft --set research='"new notes"'
  kitaru worker my_agent
  kitaru serve my_agent --port 8000"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """Options accepted before the command and, repeated, after it.

    After the command they default to SUPPRESS, so they override a value given
    before the command only when they are given.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "--store",
        metavar="URL",
        default=default(None),
        help="run store URL, e.g. sqlite:///path/kitaru.db (default: KITARU_STORE, "
        "kitaru.toml, else sqlite:///.kitaru/kitaru.db)",
    )
    parser.add_argument(
        "--artifacts",
        metavar="URL",
        default=default(None),
        help="artifact store folder or fsspec URL (default: KITARU_ARTIFACTS, kitaru.toml, "
        "else .kitaru/artifacts)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for scripts"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log debug details"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``kitaru`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, after_command=False)
    common = _Parser(add_help=False)
    _global_options(common, after_command=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help, parents=[common])

    runs = command("runs", "list runs, newest first")
    runs.add_argument(
        "--status", choices=[s.value for s in RunStatus], help="only runs in this status"
    )
    runs.add_argument("--flow", metavar="NAME", help="only runs of this flow")
    runs.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="at most N runs (default 50)"
    )

    show = command(
        "show",
        "a run's timeline",
        "A run's timeline: every journal entry (position, name, kind, status, attempts, "
        "duration, metadata, artifact, errors of failed attempts), the pending wait with its "
        "question and expected JSON Schema, the error and traceback of a failed run, usage, "
        "metadata and saved artifacts.",
    )
    show.add_argument("run", metavar="RUN", help="run id or unique prefix")

    send = command(
        "send",
        "send a message to a run",
        "Send VALUE to a run's mailbox. VALUE is JSON (true, 42, '{\"a\": 1}', '\"text\"'); "
        "a bare word that is not JSON is taken as a string. It is checked against the "
        "schema of the wait pending on the topic before it is stored.",
    )
    send.add_argument("run", metavar="RUN", help="run id or unique prefix")
    send.add_argument("value", metavar="VALUE", help="JSON, or a bare word taken as a string")
    send.add_argument("--topic", default="input", help="mailbox topic (default: input)")
    send.add_argument("--key", help="idempotency key: a second send with it is dropped")

    replay = command(
        "replay",
        "re-run a run from a checkpoint, as a new run",
        "Create a new run of the same flow and input that reuses the original's journal "
        "before CHECKPOINT and runs live from there (a worker hosting the flow executes it). "
        "Prints the new run's id.",
    )
    replay.add_argument("run", metavar="RUN", help="run id or unique prefix")
    replay.add_argument(
        "--from",
        dest="from_checkpoint",
        metavar="CHECKPOINT",
        help="checkpoint name (first occurrence), name#N (N-th, from 1) or journal position "
        "(default: from the start)",
    )
    replay.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="NAME=JSON",
        help="replace the recorded value of checkpoint NAME (or name#N); repeatable",
    )
    replay.add_argument(
        "--module",
        dest="modules",
        action="append",
        metavar="MODULE",
        help="import this module (dotted name or .py path) first, so --set values are checked "
        "against the checkpoints' return types; repeatable",
    )

    retry = command(
        "retry", "resume a failed run from its failure point (finished checkpoints are reused)"
    )
    retry.add_argument("run", metavar="RUN", help="run id or unique prefix")

    cancel = command("cancel", "cancel an unfinished run")
    cancel.add_argument("run", metavar="RUN", help="run id or unique prefix")

    worker = command(
        "worker",
        "host the flows defined in modules until SIGINT/SIGTERM",
        "Import each MODULE (a dotted module name, or the path of a .py file), host every "
        "@kitaru.flow among its globals and resume whatever is due: runs whose worker died, "
        "messages, timers. Stops cleanly on SIGINT or SIGTERM.",
    )
    worker.add_argument("modules", nargs="+", metavar="MODULE", help="module name or .py path")

    serve = command(
        "serve",
        "serve the HTTP API and the dashboard, hosting the flows of modules",
        "Serve the HTTP API (under /api) and the dashboard (at /) with uvicorn, hosting every "
        "@kitaru.flow among the globals of each MODULE (with none, runs can be inspected and "
        "steered but not started). Binds 127.0.0.1; any other --host needs KITARU_API_TOKEN, "
        "which every API request must then carry as 'Authorization: Bearer <token>'. Needs "
        "the fastapi extra: pip install 'kitaru[fastapi]'.",
    )
    serve.add_argument("modules", nargs="*", metavar="MODULE", help="module name or .py path")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--max-body",
        type=_positive,
        default=1024 * 1024,
        metavar="BYTES",
        help="request body limit (default 1048576)",
    )
    serve.add_argument("--no-dashboard", action="store_true", help="serve the API only")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    if args.verbose:
        level = logging.DEBUG
    elif args.command in ("worker", "serve"):
        level = logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _expected(exc: BaseException) -> BaseException | None:
    """The error to report in one line, looking inside exception groups; else None."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_expected(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
        return None
    return exc if isinstance(exc, KitaruError | UsageError) else None


def _fail(exc: BaseException | str) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kitaru`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _fail(exc)
    if args.command is None:
        parser.print_help()
        return 0
    _configure_logging(args)
    import anyio

    try:
        return anyio.run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`kitaru runs | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except BaseException as exc:
        expected = _expected(exc)
        if expected is None:
            raise
        return _fail(expected)
