"""What each ``kitaru`` command does, on a runtime opened for the command.

Arguments are checked (VALUE and ``--set`` JSON, ``--from``) before the store
is opened, and a run reference is resolved before anything is written, so a
command that fails changes nothing. Only ``worker`` hosts flows; the other
commands open a runtime that knows no flow, read or write the store through
the public :class:`kitaru.Runtime` API and close it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kitaru

from ..storage._url import redact, scheme_of
from ._render import run_duration, run_lines, runs_table, short_id

if TYPE_CHECKING:
    from .. import RunInfo, Runtime

__all__ = (
    "COMMANDS",
    "UsageError",
    "make_runtime",
    "parse_checkpoint",
    "parse_overrides",
    "parse_value",
    "write",
)


class UsageError(Exception):
    """A mistake in the command line: reported as one line, exit status 2, nothing changed."""


Command = Callable[[argparse.Namespace], Awaitable[int]]

#: Leading characters that mark a VALUE as meant to be JSON (so a typo is an error).
_JSON_STARTS = ("{", "[", '"')


# -- arguments ------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_value(text: str, what: str = "VALUE") -> Any:
    """JSON, or a bare word taken as a string (``yes`` -> ``"yes"``, ``42`` -> ``42``).

    Raises:
        UsageError: ``text`` starts like JSON (``{``, ``[``, ``"``) but does not parse.
    """
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        if text.lstrip().startswith(_JSON_STARTS):
            raise UsageError(f"{what} is not valid JSON: {exc}: {text}") from None
        return text


def parse_checkpoint(text: str | None) -> str | int | None:
    """``--from``: a journal position (digits), else a name or ``name#N``."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        raise UsageError("--from needs a checkpoint name, name#N or journal position")
    return int(text) if text.isdigit() else text


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set NAME=JSON`` pairs (``NAME`` may be ``name#N``) as a dict."""
    overrides: dict[str, Any] = {}
    for item in items or ():
        name, eq, text = item.partition("=")
        name = name.strip()
        if not eq or not name:
            raise UsageError(
                f"--set takes NAME=JSON, for example research='\"notes\"'; got {item!r}"
            )
        if name in overrides:
            raise UsageError(f"--set {name} is given twice")
        overrides[name] = parse_value(text, f"the value of --set {name}")
    return overrides


# -- plumbing -------------------------------------------------------------------------


def write(lines: Sequence[str] | str) -> None:
    """Print to stdout in one write."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """A remark for the person at the terminal (stderr, so stdout stays parseable)."""
    sys.stderr.write(f"kitaru: {text}\n")


def make_runtime(args: argparse.Namespace, flows: Sequence[kitaru.Flow[Any, Any]] = ()) -> Runtime:
    """A runtime on the store the flags, environment or config file name (not yet open)."""
    return kitaru.runtime(store=args.store, artifacts=args.artifacts, flows=flows)


def missing_store(rt: Runtime) -> Path | None:
    """The SQLite file ``rt`` would create, if it does not exist yet; else ``None``.

    Commands that only look at or steer existing runs must not create an empty
    database (a mistyped ``--store`` would otherwise go unnoticed).
    """
    url = rt.config.store
    if scheme_of(url).partition("+")[0] != "sqlite":
        return None
    from ..storage.sqlite import SQLiteStore

    path = SQLiteStore(url).path
    return None if path.exists() else path


def _no_store(path: Path) -> str:
    return (
        f"no kitaru store at {path} (nothing has run against it yet); "
        "point --store or KITARU_STORE at the store your flows use"
    )


def _open(args: argparse.Namespace) -> Runtime:
    rt = make_runtime(args)
    path = missing_store(rt)
    if path is not None:
        raise UsageError(_no_store(path))
    return rt


async def resolve_run(rt: Runtime, ref: str) -> str:
    """The full id of the run that ``ref`` (an id or a unique prefix) names."""
    try:
        return await rt.find_run(ref)
    except kitaru.RunNotFound as exc:
        if str(exc) == str(kitaru.RunNotFound(exc.run_id)):  # the generic wording
            raise UsageError(
                f"no run {ref!r} in store {redact(rt.config.store)}; list runs with 'kitaru runs'"
            ) from None
        raise


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


# -- commands -------------------------------------------------------------------------


def _summary(info: RunInfo, now: datetime) -> dict[str, Any]:
    data = info.model_dump(
        mode="json",
        by_alias=True,
        exclude={"checkpoints", "checkpoint_count", "artifacts", "input", "output", "traceback"},
    )
    data["checkpoints"] = info.checkpoint_count
    data["duration_s"] = run_duration(info, now)
    return data


async def runs(args: argparse.Namespace) -> int:
    """``kitaru runs``: newest first, filtered by status and flow."""
    rt = make_runtime(args)
    path = missing_store(rt)
    infos: list[RunInfo] = []
    if path is None:
        async with rt:
            infos = await rt.list_runs(
                status=args.status, flow=args.flow, limit=args.limit, journal=False
            )
    else:
        note(_no_store(path))
    now = datetime.now(UTC)
    if args.json:
        write(_dumps([_summary(info, now) for info in infos]))
    elif infos:
        write(runs_table(infos, now))
    else:
        write("no runs")
    return 0


async def show(args: argparse.Namespace) -> int:
    """``kitaru show RUN``: the run's timeline."""
    async with _open(args) as rt:
        info = await rt.get_run(await resolve_run(rt, args.run))
    if args.json:
        write(info.model_dump_json(indent=2, by_alias=True))
    else:
        write(run_lines(info, datetime.now(UTC)))
    return 0


async def send(args: argparse.Namespace) -> int:
    """``kitaru send RUN VALUE``: a message, checked against the pending wait's schema."""
    value = parse_value(args.value)
    async with _open(args) as rt:
        run_id = await resolve_run(rt, args.run)
        message_id = await rt.send(run_id, value, topic=args.topic, key=args.key)
    if args.json:
        write(_dumps({"run_id": run_id, "message_id": message_id, "topic": args.topic}))
    else:
        write(f"sent message {message_id} to run {run_id} on topic {args.topic!r}")
    return 0


def _hosting_hint(flow: str) -> None:
    note(f"a worker hosting flow {flow!r} executes it (kitaru worker MODULE)")


async def _flow_of(rt: kitaru.Runtime, run_id: str) -> str:
    """The flow of a run, from its row alone (its journal may be long)."""
    record = await rt.store.get_run(run_id)
    if record is None:
        raise kitaru.RunNotFound(run_id)
    return record.flow


async def replay(args: argparse.Namespace) -> int:
    """``kitaru replay RUN``: a new run that reuses the journal before ``--from``."""
    start = parse_checkpoint(args.from_checkpoint)
    overrides = parse_overrides(args.overrides)
    if args.modules:
        # Only imported, not hosted: the checkpoints' return types become known
        # (to check --set values) while the new run is left to a worker.
        from .._runtime._modules import import_module_spec

        for spec in args.modules:
            import_module_spec(spec)
    async with _open(args) as rt:
        run_id = await resolve_run(rt, args.run)
        handle = await rt.replay(run_id, from_checkpoint=start, overrides=overrides or None)
        flow = await _flow_of(rt, handle.id)
    if args.json:
        write(_dumps({"id": handle.id, "replay_of": run_id, "flow": flow}))
    else:
        write(handle.id)
        _hosting_hint(flow)
    return 0


async def retry(args: argparse.Namespace) -> int:
    """``kitaru retry RUN``: resume a failed run in place from its failure point."""
    async with _open(args) as rt:
        run_id = await resolve_run(rt, args.run)
        handle = await rt.retry(run_id)
        flow = await _flow_of(rt, handle.id)
    if args.json:
        write(_dumps({"id": handle.id, "flow": flow}))
    else:
        write(handle.id)
        _hosting_hint(flow)
    return 0


async def cancel(args: argparse.Namespace) -> int:
    """``kitaru cancel RUN``: stop an unfinished run for good."""
    async with _open(args) as rt:
        run_id = await resolve_run(rt, args.run)
        if not await rt.cancel(run_id):
            status = (await rt.get_run(run_id)).status.value
            raise UsageError(
                f"run {short_id(run_id)} is {status} already; only unfinished runs can be cancelled"
            )
    if args.json:
        write(_dumps({"id": run_id, "status": "cancelled"}))
    else:
        write(f"cancelled run {run_id}")
    return 0


async def worker(args: argparse.Namespace) -> int:
    """``kitaru worker MODULE...``: host the flows of those modules until SIGINT/SIGTERM."""
    from .._runtime._modules import load_flows
    from ._worker import serve

    flows = load_flows(args.modules, kitaru.Flow)
    on_event = (lambda event: write(json.dumps(event))) if args.json else None
    return await serve(make_runtime(args, flows), flows, args.modules, on_event=on_event)


async def serve(args: argparse.Namespace) -> int:
    """``kitaru serve [MODULE...]``: the HTTP API and the dashboard, until SIGINT/SIGTERM."""
    try:
        from ._serve import serve_command
    except ImportError as exc:
        raise UsageError(f"kitaru serve needs the fastapi extra: {exc}") from None
    return await serve_command(args)


COMMANDS: dict[str, Command] = {
    "runs": runs,
    "show": show,
    "send": send,
    "replay": replay,
    "retry": retry,
    "cancel": cancel,
    "worker": worker,
    "serve": serve,
}
