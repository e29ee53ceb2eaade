"""Structured output: asking a model for JSON of a type, and parsing its answer into it.

With ``schema``, a call asks for JSON through litellm's ``response_format``
when the model supports it, and in the system prompt always; the answer is
parsed (a fenced code block is accepted, a wrapped ``{"value": ...}`` is
unwrapped) and validated by the type's codec. An answer that does not fit is
sent back to the model with the validation error (:func:`reask`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import SerializationError
from ..storage.serde import Codec, describe_type

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ("ask_for_json", "parse_answer", "reask")


def ask_for_json(
    litellm: ModuleType,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    codec: Codec,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and parameters that ask the model for JSON fitting ``codec``'s type."""
    schema = dict(codec.json_schema())
    if schema.get("type") != "object":
        # Structured-output APIs want an object at the top: wrap the value.
        defs = schema.pop("$defs", None)
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
        if defs:
            schema["$defs"] = defs
    instruction = (
        "Reply with a single JSON value and nothing else, matching this JSON Schema:\n"
        + json.dumps(schema)
    )
    if "response_format" not in params:
        params = dict(params)
        if _supports(litellm.supports_response_schema, model):
            title = re.sub(r"[^A-Za-z0-9_-]", "_", describe_type(codec.annotation))[:64]
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": title or "answer", "schema": schema, "strict": False},
            }
        elif "response_format" in (_supported_params(litellm, model) or ()):
            params["response_format"] = {"type": "json_object"}
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{instruction}".strip()
        return [first, *messages[1:]], params
    return [{"role": "system", "content": instruction}, *messages], params


def _supports(check: Callable[..., Any], model: str) -> bool:
    try:
        return bool(check(model=model))
    except Exception:
        return False


def _supported_params(litellm: ModuleType, model: str) -> list[str] | None:
    try:
        found = litellm.get_supported_openai_params(model=model)
    except Exception:
        return None
    return list(found) if found else None


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_answer(text: str, codec: Codec) -> Any:
    """The answer as ``codec``'s type; a :class:`SerializationError` says why it does not fit."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise SerializationError(f"the answer is not JSON ({exc})") from None
    if (
        isinstance(data, dict)
        and set(data) == {"value"}
        and codec.json_schema().get("type") != ("object")
    ):
        data = data["value"]
    return codec.validate(json.dumps(data), what="the answer")


def reask(
    messages: list[dict[str, Any]], answer: str, error: SerializationError
) -> list[dict[str, Any]]:
    """The conversation sent back after ``answer`` did not fit: the answer, then why."""
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": f"That answer is not valid: {error}. Reply again with only "
            "the corrected JSON value.",
        },
    ]
