"""Typed serialisation: values become JSON through pydantic, typed by annotations.

A checkpoint's return annotation (a flow's parameter annotations) decides how a
value is written and how it is read back, so a replayed checkpoint returns the
same type the live one did: ``tuple[int, str]``, dataclasses, pydantic models,
TypedDicts, ``datetime``, ``UUID`` and ``bytes`` (base64) all round-trip.

Pickle is never used: it would let whoever can write the database run code in
every worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, PydanticSchemaGenerationError, PydanticUserError, TypeAdapter
from pydantic_core import PydanticSerializationError

from .._errors import SerializationError

__all__ = ("Codec", "codec_for", "describe_type")

# bytes as base64 so arbitrary binary survives JSON, and infinities and NaN
# as the constants pydantic reads back (its default writes null, which a
# float annotation then refuses on replay); models and dataclasses bring
# their own config, which pydantic refuses to override (handled below).
_CONFIG = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", ser_json_inf_nan="constants")


class Codec:
    """Encoder/decoder for one annotation."""

    __slots__ = ("_adapter", "_schema", "_to_json", "annotation", "exact", "is_any")

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self.is_any = annotation is Any
        #: For these annotations a value of exactly that type survives the JSON
        #: round trip unchanged, so the live value can be handed back as is.
        self.exact = annotation if annotation in _EXACT else None
        self._schema: dict[str, Any] | None = None
        try:
            try:
                self._adapter: TypeAdapter[Any] = TypeAdapter(annotation, config=_CONFIG)
            except PydanticUserError as exc:
                if exc.code != "type-adapter-config-unused":
                    raise
                self._adapter = TypeAdapter(annotation)
        except (PydanticUserError, PydanticSchemaGenerationError) as exc:
            raise SerializationError(
                f"values of type {describe_type(annotation)} cannot be stored: {exc}"
            ) from exc
        self._to_json = self._adapter.serializer.to_json

    def dump(self, value: Any, *, what: What) -> bytes:
        """Encode ``value`` as JSON bytes; ``what`` names it in errors."""
        if type(value) is self.exact:
            # Exactly the annotated type: nothing to warn about, and asking
            # pydantic to turn warnings into errors costs more than the rest.
            return self._to_json(value)
        try:
            return self._adapter.dump_json(value, warnings="error")
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"{_name(what)}: a value of type {type(value).__qualname__} cannot be stored as "
                f"{describe_type(self.annotation)} ({_first_line(exc)}). Use values pydantic "
                "can serialise (str, numbers, lists, dicts, dataclasses, pydantic models, ...) "
                "that match the annotation."
            ) from exc

    def load(self, data: bytes | str, *, what: What) -> Any:
        """Decode JSON written by :meth:`dump` back into the annotated type."""
        try:
            return self._adapter.validate_json(data)
        except ValueError as exc:
            raise SerializationError(
                f"{_name(what)}: the stored value no longer fits {describe_type(self.annotation)} "
                f"({exc}). The annotation changed since the value was recorded; restore "
                "it, or replay the run from a checkpoint before this one."
            ) from exc

    def validate(self, data: bytes | str, *, what: What) -> Any:
        """Decode JSON that comes from a person (an override, a message) into the type.

        Raises:
            SerializationError: the value does not fit; the message says why.
        """
        try:
            return self._adapter.validate_json(data)
        except ValueError as exc:
            raise SerializationError(
                f"{_name(what)} does not fit {describe_type(self.annotation)}: {_summary(exc)}"
            ) from exc

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of the annotation (for waits and the HTTP API)."""
        if self._schema is None:
            self._schema = self._adapter.json_schema()
        return self._schema


#: What a value is, for error messages: a string, or a function that builds it
#: (so the hot path never formats a message it does not need).
What = str | Callable[[], str]
_EXACT = (str, int, float, bool, bytes, type(None))


def _name(what: What) -> str:
    return what if isinstance(what, str) else what()


_cache: dict[Any, Codec] = {}


def codec_for(annotation: Any) -> Codec:
    """Return the (cached) codec of ``annotation``; ``Any`` when it is missing."""
    try:
        codec = _cache.get(annotation)
    except TypeError:  # unhashable annotation: build it every time
        return Codec(annotation)
    if codec is None:
        codec = _cache[annotation] = Codec(annotation)
    return codec


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _summary(exc: ValueError) -> str:
    """A pydantic validation error in one line: ``score: Field required; ...``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return _first_line(exc)
    parts = []
    for error in errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "value"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def describe_type(annotation: Any) -> str:
    """Human name of an annotation for error messages."""
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def dumps_plain(value: Any) -> bytes:
    """Compact JSON of plain data (metadata, error records)."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def loads_plain(data: bytes | str | None) -> Any:
    """Inverse of :func:`dumps_plain`; ``None`` stays ``None``."""
    return None if data is None else json.loads(data)
