"""The open/close life of a store backend, written once.

Every backend goes ``new`` → ``open`` → ``closed``: the constructor does no
I/O, :meth:`StoreResource.open` (or ``async with``) connects, and
:meth:`StoreResource.aclose` releases everything and is final. A store that
is dropped while open warns (``ResourceWarning``, as an unclosed file does)
and drops its OS resources without awaiting anything. A backend fills in
``_where`` (how its messages name it) and the ``_setup``, ``_teardown``
and ``_abandon`` hooks; the state checks and their messages are shared.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal, Self

import anyio

from kitaru._errors import StorageError

__all__ = ("StoreResource",)


class StoreResource:
    """Mixin giving a store ``open``, ``aclose``, ``async with`` and the unclosed warning.

    Subclasses set ``self._where`` in their constructor (``"SQLite store
    runs.db"``: how error messages name the store, password-free).
    """

    #: ``False`` for a store that holds no OS resource (nothing to warn about).
    _warn_unclosed: ClassVar[bool] = True
    _state: Literal["new", "open", "closed"] = "new"
    _where: str

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # getattr: a constructor that raised leaves no _state behind.
        if self._warn_unclosed and getattr(self, "_state", None) == "open":
            warnings.warn(
                f"{self!r} was opened but never closed; use 'async with' or 'await store.aclose()'",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
            self._abandon()

    async def open(self) -> Self:
        """Connect (a no-op on an open store); returns the store itself.

        Raises:
            StorageError: the store was closed, or the backend could not open.
        """
        if self._state == "open":
            return self
        if self._state == "closed":
            raise self._closed_error()
        await self._setup()
        self._state = "open"
        return self

    async def aclose(self) -> None:
        """Release the store's connections; safe to call twice, and final."""
        was_open = self._state == "open"
        self._state = "closed"
        if was_open:
            # Shielded: closing often runs while the caller is being cancelled.
            with anyio.CancelScope(shield=True):
                await self._teardown()

    async def _setup(self) -> None:
        """Open the backend's connections (called by :meth:`open` on a new store)."""

    async def _teardown(self) -> None:
        """Close the backend's connections (called by :meth:`aclose` on an open store)."""

    def _abandon(self) -> None:
        """Drop OS resources without awaiting: the store was never closed."""

    def _check_open(self) -> None:
        """Raise unless the store is open."""
        if self._state != "open":
            if self._state == "closed":
                raise self._closed_error()
            raise StorageError(
                f"{self._where} is not open; use 'async with {type(self).__name__}(url)', "
                "'await store.open()' or kitaru.storage.open_store(url)"
            )

    def _closed_error(self) -> StorageError:
        return StorageError(
            f"{self._where} is closed; open a new one with kitaru.storage.open_store(url)"
        )
