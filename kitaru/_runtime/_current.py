"""The runtime open in this task, for calls that have no runtime argument.

``kitaru.send`` and ``kitaru.load`` outside a flow, and a bare flow call, use
the innermost ``async with kitaru.runtime()`` of the calling task (a
``ContextVar`` follows anyio tasks and worker threads).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ("current_runtime", "runtime_var")

runtime_var: ContextVar[Runtime | None] = ContextVar("kitaru_runtime", default=None)


def current_runtime() -> Runtime | None:
    """The innermost open runtime of this task, if any."""
    return runtime_var.get()
