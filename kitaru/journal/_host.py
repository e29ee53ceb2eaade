"""What a running flow needs from whoever hosts it, as narrow Protocols.

The journal layer never sees the :class:`kitaru.Runtime`: a run's durable
calls reach the store, the artifact store, the clock, the configuration and
the few runtime services they use (send a message, run a child flow, tell
watchers a run changed) through a :class:`Host`. The runtime is one; a test
can be another. Passing this narrow object down, instead of the whole runner,
is what keeps the layers below the runtime from importing it (trio hands its
tasks a ``Nursery``, not the run loop).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    import anyio

    from .._clock import Clock
    from .._config import RuntimeConfig
    from .._types import Budget
    from ..storage.base import ArtifactStore, RunStore
    from ..storage.serde import Codec

__all__ = ("Activation", "Host", "HostedFlow")


class HostedFlow(Protocol):
    """What hosting a run needs of its flow (``kitaru.Flow`` is the one implementation)."""

    @property
    def name(self) -> str:
        """The flow's name, as stored with its runs."""
        ...

    @property
    def fn(self) -> Callable[..., Any]:
        """The decorated function."""
        ...

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` flow (a plain ``def`` runs in a worker thread)."""
        ...

    @property
    def budget(self) -> Budget | None:
        """The token/cost budget of each run of the flow, if any."""
        ...

    @property
    def output_codec(self) -> Codec:
        """Codec of the flow's return value."""
        ...

    def encode_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """The run's input as stored."""
        ...

    def decode_input(self, data: bytes | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Typed ``(args, kwargs)`` from the stored input."""
        ...


class Host(Protocol):
    """What the durable calls of a running flow need from its host."""

    @property
    def store(self) -> RunStore:
        """The run store (the truth: every durable call commits here)."""
        ...

    @property
    def config(self) -> RuntimeConfig:
        """Settings: inline threshold, idle grace, budgets, LLM options..."""
        ...

    @property
    def clock(self) -> Clock:
        """Where deadlines are read (a fake clock in tests)."""
        ...

    def artifacts(self) -> ArtifactStore:
        """The artifact store for large values and ``kitaru.save``."""
        ...

    def touch(self, run_id: str) -> None:
        """``run_id`` changed in the store: wake whoever watches it live."""
        ...

    def flow_budget(self, flow: str) -> Budget | None:
        """The budget of flow ``flow`` if this host knows it (budgets of parent runs)."""
        ...

    async def send(
        self,
        run_id: str,
        value: Any,
        *,
        topic: str = "input",
        key: str | None = None,
        sender: str | None = None,
    ) -> int:
        """Put a message in ``run_id``'s mailbox; returns its id."""
        ...

    async def run_child(
        self,
        flow: HostedFlow,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str,
        parent: str,
    ) -> Any:
        """Start (or find) the child run ``run_id`` of ``parent`` and return its output."""
        ...


class Activation(Protocol):
    """The live activation of a run, as a suspended durable call sees it."""

    #: Set when something may have changed for a suspended flow (a message, a
    #: deadline, a request to evict); waits re-check the store on it.
    wake: anyio.Event
    #: The host wants this run out of memory (residency bound reached).
    evict_requested: bool

    def suspended(self) -> AbstractAsyncContextManager[None]:
        """While inside, the run holds no execution slot and counts as resident-idle."""
        ...

    def slot_released(self) -> AbstractAsyncContextManager[None]:
        """While inside, the run holds no execution slot (it awaits another run)."""
        ...
