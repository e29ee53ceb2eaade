"""How a durable call's failure is recorded, and raised again on replay.

A failed call is stored as plain data (type, message, traceback, plain
arguments, the errors of earlier attempts) so that a replay raises the same
exception class without unpickling anything.
"""

from __future__ import annotations

import importlib
import traceback
from typing import TYPE_CHECKING, Any

from .._errors import CheckpointFailed
from ..storage.serde import loads_plain

if TYPE_CHECKING:
    from ..storage.base import JournalEntry

__all__ = ("RETRY", "describe_error", "error_record", "rebuild_error", "retry_history")

#: Status of a failed journal entry that ``rt.retry`` marked to run again.
RETRY = "retry"


def error_record(exc: BaseException, attempts: list[str] | None = None) -> dict[str, Any]:
    """Plain-data description of an exception, as stored in the journal."""
    cls = type(exc)
    record: dict[str, Any] = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    args = [a for a in exc.args if isinstance(a, str | int | float | bool | None)]
    if len(args) == len(exc.args):
        record["args"] = args
    if attempts:
        record["attempts"] = attempts
    return record


def retry_history(entry: JournalEntry) -> tuple[int, list[str]]:
    """Attempts so far and their errors, from an entry ``rt.retry`` marked to run again."""
    errors = (loads_plain(entry.metadata) or {}).get("errors") or []
    return entry.attempts, [str(e) for e in errors]


def describe_error(exc: BaseException) -> str:
    """One line: ``"ValueError: bad input"``."""
    message = str(exc)
    return f"{type(exc).__qualname__}: {message}" if message else type(exc).__qualname__


def rebuild_error(name: str, data: bytes | None) -> Exception:
    """Recreate a recorded failure so a replayed flow sees the same exception type.

    The original class is rebuilt from its dotted name and plain arguments when
    possible; otherwise :class:`CheckpointFailed` carries the type and message.
    """
    record = loads_plain(data) or {}
    type_name: str = record.get("type", "Exception")
    message: str = record.get("message", "")
    args = record.get("args")
    module_name, _, qualname = type_name.rpartition(".")
    if args is not None and module_name:
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, type) and issubclass(obj, Exception):
                exc = obj(*args)
                if str(exc) == message:
                    return exc
        except Exception:
            pass
    return CheckpointFailed(name, type_name, message)
