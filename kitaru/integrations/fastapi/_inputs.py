"""A flow's signature as a pydantic model: the typed ``input`` of ``POST /flows/{name}/runs``.

Every parameter becomes a field under its own name (aliases keep names such as
``json`` or ``schema`` from clashing with pydantic's attributes); ``*args`` is
a list and ``**kwargs`` an object under their names. Unknown fields are
rejected, so a typo is a 422 rather than a silently ignored argument.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ... import Flow

__all__ = ("bind_input", "input_model")

_P = inspect.Parameter


def _model_name(flow_name: str) -> str:
    words = re.split(r"[^0-9A-Za-z]+", flow_name)
    return "".join(w[:1].upper() + w[1:] for w in words if w) + "Input"


def _absent() -> None:
    return None


def _json_default(value: Any) -> tuple[bool, Any]:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False, None
    return True, value


@functools.cache
def input_model(flow: Flow[Any, Any]) -> type[BaseModel]:
    """The model of ``flow``'s arguments (cached per flow)."""
    hints = flow.type_hints()
    fields: dict[str, Any] = {}
    for index, (name, param) in enumerate(flow.signature.parameters.items()):
        annotation = hints.get(name, Any)
        extra: dict[str, Any] = {}
        default: Any
        if param.kind is _P.VAR_POSITIONAL:
            annotation = list[annotation]  # type: ignore[valid-type]
            has_default, default = True, []
        elif param.kind is _P.VAR_KEYWORD:
            annotation = dict[str, annotation]  # type: ignore[valid-type]
            has_default, default = True, {}
        elif param.default is _P.empty:
            has_default, default = False, None
        else:
            has_default = True
            shown, default = _json_default(param.default)
            if shown:
                extra["default"] = default
        if has_default:
            # The real default applies when the field is absent (bind_input
            # leaves it out), so the model never needs to hold or dump it.
            field = Field(
                default_factory=_absent, alias=name, title=name, json_schema_extra=extra or None
            )
            fields[f"p{index}"] = (annotation, field)
        else:
            fields[f"p{index}"] = (annotation, Field(alias=name, title=name))
    model: type[BaseModel] = create_model(
        _model_name(flow.name),
        __config__=ConfigDict(extra="forbid", populate_by_name=False),
        __doc__=inspect.getdoc(flow.fn) or f"Arguments of flow {flow.name}.",
        **fields,
    )
    return model


def bind_input(flow: Flow[Any, Any], data: BaseModel) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for ``rt.start`` from a validated :func:`input_model` instance.

    Parameters the client left out keep the function's own defaults.
    """
    given = data.model_fields_set
    params = list(flow.signature.parameters.values())
    values = {f"p{i}": getattr(data, f"p{i}") for i in range(len(params))}
    varargs = next(
        (i for i, p in enumerate(params) if p.kind is _P.VAR_POSITIONAL and values[f"p{i}"]),
        None,
    )
    positional = [i for i, p in enumerate(params) if p.kind is _P.POSITIONAL_ONLY]
    # Up to which parameter everything must be passed by position: the last
    # positional-only one given, or all of them when *args has values.
    last = max((i for i in positional if f"p{i}" in given), default=-1)
    if varargs is not None:
        last = varargs
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for i, param in enumerate(params):
        key = f"p{i}"
        if param.kind is _P.VAR_POSITIONAL:
            args.extend(values[key] or ())
        elif param.kind is _P.VAR_KEYWORD:
            kwargs.update(values[key] or {})
        elif i <= last and param.kind is not _P.KEYWORD_ONLY:
            args.append(values[key] if key in given else param.default)
        elif key in given:
            kwargs[param.name] = values[key]
    return tuple(args), kwargs
