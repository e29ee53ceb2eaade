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
from ..storage.serde import dumps_plain, loads_plain

if TYPE_CHECKING:
    from ..storage.base import JournalEntry

__all__ = ("RETRY", "describe_error", "error_record", "rebuild_error", "retry_history")

#: Status of a failed journal entry that ``rt.retry`` marked to run again.
RETRY = "retry"


def error_record(exc: BaseException, attempts: list[str] | None = None) -> dict[str, Any]:
    """Plain-data description of an exception, as stored in the journal.

    Besides type, message and traceback it keeps the exception's arguments and
    its own attributes when they are plain JSON data, so a replay can rebuild
    the same class even when its constructor takes other arguments.
    """
    cls = type(exc)
    record: dict[str, Any] = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    args = list(exc.args)
    if _plain(args):
        record["args"] = args
    attrs = {
        k: v
        for k, v in getattr(exc, "__dict__", {}).items()
        if not k.startswith("__") and _plain(v)
    }
    if attrs and len(dumps_plain(attrs)) <= _MAX_ATTRS:
        record["attrs"] = attrs
    if attempts:
        record["attempts"] = attempts
    return record


#: Bytes of recorded exception attributes at most (a response body is not kept).
_MAX_ATTRS = 16 * 1024


def _plain(value: Any) -> bool:
    """True when ``value`` survives a trip through the journal's JSON unchanged."""
    try:
        return bool(loads_plain(dumps_plain(value)) == value)
    except Exception:
        return False


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

    The original class is imported from its dotted name and called with its
    recorded arguments; when its constructor wants other arguments (a custom
    ``__init__``, a required keyword), the instance is made without calling
    it, with the recorded arguments and attributes set. Only when the class
    cannot be imported does :class:`CheckpointFailed` carry the type and
    message instead.
    """
    record = loads_plain(data) or {}
    type_name: str = record.get("type", "Exception")
    message: str = record.get("message", "")
    args = record.get("args")
    attrs = record.get("attrs")
    cls = _import_exception(type_name)
    if cls is not None:
        if args is not None:
            try:
                exc = cls(*args)
            except Exception:
                pass
            else:
                if str(exc) == message:
                    _set_attrs(exc, attrs)
                    return exc
        try:
            exc = cls.__new__(cls)
            exc.args = tuple(args) if args is not None else (message,)
            _set_attrs(exc, attrs)
            return exc
        except Exception:
            pass
    return CheckpointFailed(name, type_name, message)


def _import_exception(type_name: str) -> type[Exception] | None:
    module_name, _, qualname = type_name.rpartition(".")
    if not module_name:
        return None
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def _set_attrs(exc: Exception, attrs: Any) -> None:
    if isinstance(attrs, dict) and hasattr(exc, "__dict__"):
        for key, value in attrs.items():
            try:
                setattr(exc, key, value)
            except Exception:
                pass  # a read-only property: the class rebuilt it from its args
