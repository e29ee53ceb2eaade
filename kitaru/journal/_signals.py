"""Signals that unwind a flow's code on the host's behalf (``BaseException``s, never errors).

They derive from ``BaseException`` so that user code's ``except Exception``
does not swallow them; the flow actor catches them at the top of the flow.
"""

from __future__ import annotations

from typing import Any

__all__ = ("ContinueAsNew", "EvictionSignal")


class EvictionSignal(BaseException):
    """Unwinds an idle flow so its task can end; never reaches user code's ``except Exception``.

    A flow that catches ``BaseException`` and carries on is detected (every
    further durable call raises this again, and its result is discarded).
    """


class ContinueAsNew(BaseException):
    """Raised by ``kitaru.continue_as_new``; the host restarts the run with new arguments."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("continue_as_new")
        self.args_ = args
        self.kwargs_ = kwargs
