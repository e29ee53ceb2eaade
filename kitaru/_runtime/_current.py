"""The runtime open in this task, for calls that have no runtime argument.

``kitaru.send`` and ``kitaru.load`` outside a flow, ``kitaru.llm`` and a bare
flow call use the innermost ``async with kitaru.runtime()`` of the calling
task (a ``ContextVar`` that follows anyio tasks and worker threads, set by
the runtime while it is open).
"""

from ._runtime import current_runtime as current_runtime

__all__ = ("current_runtime",)
