"""The flows a runtime hosts, by name.

A runtime learns a flow when it is passed to ``kitaru.runtime(flows=[...])``
or started through it; nothing is registered globally. Two different
functions may not share a flow name in one runtime: runs are stored by name,
so a worker must know which code a stored run means.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigurationError
from ..journal._host import HostedFlow

__all__ = ("FlowTable", "check_flow")


@runtime_checkable
class _Startable(Protocol):
    """The methods a decorated flow has and a plain function lacks (checked on start)."""

    def encode_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes: ...
    def decode_input(self, data: bytes | None) -> tuple[tuple[Any, ...], dict[str, Any]]: ...


def check_flow(flow: object) -> None:
    """Refuse what is not a ``@flow``-decorated function.

    Raises:
        TypeError: ``flow`` is a plain function or anything else.
    """
    if not isinstance(flow, _Startable):
        raise TypeError(
            f"expected a @flow-decorated function, got {flow!r}; decorate it with @kitaru.flow"
        )


class FlowTable(Mapping[str, HostedFlow]):
    """Flow name -> flow, for one runtime; read-only except through :meth:`register`."""

    __slots__ = ("_flows",)

    def __init__(self) -> None:
        self._flows: dict[str, HostedFlow] = {}

    def register(self, flow: HostedFlow) -> bool:
        """Host ``flow`` here; True if it was not known before.

        Raises:
            TypeError: not a ``@flow``-decorated function.
            kitaru.ConfigurationError: another function already has its name.
        """
        # The common case, every start of a hosted flow: known, nothing to check.
        if self._flows.get(getattr(flow, "name", "")) is flow:
            return False
        check_flow(flow)
        known = self._flows.get(flow.name)
        if known is None:
            self._flows[flow.name] = flow
            return True
        if known.fn.__qualname__ != flow.fn.__qualname__:
            raise ConfigurationError(
                f"two different flows are named {flow.name!r} ({known.fn.__qualname__} and "
                f"{flow.fn.__qualname__}); give one another name with @flow(name=...)"
            )
        return False

    def __getitem__(self, name: str) -> HostedFlow:
        return self._flows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flows)

    def __len__(self) -> int:
        return len(self._flows)
