"""What became of one activation of a run; the supervisor acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = (
    "Cancelled",
    "Completed",
    "ContinuedAsNew",
    "Evicted",
    "Failed",
    "Infra",
    "Outcome",
)


@dataclass(frozen=True, slots=True)
class Completed:
    """The flow returned; its value is committed."""

    value: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """The flow raised; the run is ``failed`` with the error stored."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The run was cancelled (by ``rt.cancel`` here or elsewhere)."""


@dataclass(frozen=True, slots=True)
class Evicted:
    """The run is suspended and was evicted from memory; only its rows remain."""

    #: True when user code caught the eviction signal and carried on.
    swallowed: bool = False


@dataclass(frozen=True, slots=True)
class ContinuedAsNew:
    """The flow restarted itself with new arguments; run it again at once."""


@dataclass(frozen=True, slots=True)
class Infra:
    """The store (or another part of the runtime) failed; the run may be restarted."""

    error: BaseException


Outcome = Completed | Failed | Cancelled | Evicted | ContinuedAsNew | Infra
