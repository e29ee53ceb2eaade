"""The checkpoints defined in this process, by recorded name.

Replay overrides are validated against the return type of the checkpoint
they replace; the planner finds it here by name. The sets are weak, so a
checkpoint defined in a test or a reloaded module does not live forever.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..storage.serde import Codec

__all__ = ("NamedCheckpoint", "checkpoints_named", "register_checkpoint")


class NamedCheckpoint(Protocol):
    """What the replay planner reads of a checkpoint (``kitaru.Checkpoint`` is one)."""

    @property
    def name(self) -> str:
        """The recorded name."""
        ...

    @property
    def fn(self) -> Callable[..., Any]:
        """The decorated function (its qualified name appears in errors)."""
        ...

    @property
    def codec(self) -> Codec:
        """Codec of the return value."""
        ...


_by_name: dict[str, weakref.WeakSet[Any]] = {}


def register_checkpoint(checkpoint: NamedCheckpoint) -> None:
    """Make ``checkpoint`` findable by its name (held weakly)."""
    _by_name.setdefault(checkpoint.name, weakref.WeakSet()).add(checkpoint)


def checkpoints_named(name: str) -> list[NamedCheckpoint]:
    """The checkpoints of this process recorded under ``name``."""
    return list(_by_name.get(name, ()))
