"""Which class serves which store URL scheme, imported only when a URL asks for it.

Backends are named as ``"module:Class"`` strings so that importing kitaru never
imports a database driver (asyncpg stays unloaded until a ``postgresql://`` URL
is opened).
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Any

from kitaru._errors import ConfigurationError

from ._url import redact, scheme_of
from .base import RunStore

__all__ = ("open_store", "register_store", "registry")

#: A ``"module:Class"`` string or the class itself; called with the URL.
StoreTarget = str | type[Any]

_POSTGRES_HINT = "the PostgreSQL run store needs the asyncpg driver: pip install asyncpg"

_registry: dict[str, StoreTarget] = {
    "memory": "kitaru.storage.memory:MemoryStore",
    "sqlite": "kitaru.storage.sqlite:SQLiteStore",
    "postgresql": "kitaru.storage.postgres:PostgresStore",
    "postgres": "kitaru.storage.postgres:PostgresStore",
}
# What to tell the user when a backend's module cannot be imported.
_hints: dict[str, str] = {"postgresql": _POSTGRES_HINT, "postgres": _POSTGRES_HINT}

#: Read-only view of the scheme -> backend map.
registry = MappingProxyType(_registry)


def register_store(
    scheme: str, target: StoreTarget, *, hint: str | None = None, clobber: bool = False
) -> None:
    """Serve URLs of ``scheme`` with ``target``.

    Args:
        scheme: the URL scheme, e.g. ``"redis"`` for ``redis://…`` URLs.
        target: the store class, or ``"package.module:Class"`` to import it
            only when such a URL is opened. It is called with the URL.
        hint: shown when ``target``'s module cannot be imported, e.g.
            ``"pip install kitaru-redis"``.
        clobber: replace an existing, different registration of ``scheme``.

    Raises:
        ConfigurationError: the scheme or target is malformed, or ``scheme``
            is taken and ``clobber`` is false.
    """
    key = scheme_of(f"{scheme}://")
    if isinstance(target, str):
        module, colon, name = target.partition(":")
        if not (module and colon and name):
            raise ConfigurationError(
                f"store target {target!r} must look like 'package.module:ClassName'"
            )
    current = _registry.get(key)
    if current is not None and current != target and not clobber:
        raise ConfigurationError(
            f"scheme {key!r} is already served by {_describe(current)}; "
            "pass clobber=True to replace it"
        )
    _registry[key] = target
    if hint is not None:
        _hints[key] = hint
    else:
        _hints.pop(key, None)


async def open_store(url: str) -> RunStore:
    """Build and open the run store that ``url`` names.

    The backend class is imported on first use; if it has an ``open()``
    coroutine it is awaited (it connects and migrates the schema).

    Args:
        url: e.g. ``"sqlite:///kitaru.db"``, ``"memory://"``,
            ``"postgresql://user:pass@host/db"``.

    Returns:
        The open store; close it with ``await store.aclose()``.

    Raises:
        ConfigurationError: the scheme is unknown or its backend is not installed.
        StorageError: the backend could not open the store.
    """
    key = _lookup_key(url)
    store = _import(key, url)(url)
    if not isinstance(store, RunStore):
        missing = [name for name in _PROTOCOL_MEMBERS if not hasattr(store, name)]
        raise ConfigurationError(
            f"{_describe(_registry[key])} does not implement the RunStore protocol "
            f"(missing: {', '.join(missing) or '?'}), so it cannot serve {redact(url)!r}"
        )
    opener = getattr(store, "open", None)
    if opener is not None:
        await opener()
    return store


#: What a store must have (the Protocol's methods), named when one lacks some.
_PROTOCOL_MEMBERS = sorted(
    name
    for name in vars(RunStore)
    if not name.startswith("_") and callable(getattr(RunStore, name))
)


def _lookup_key(url: str) -> str:
    scheme = scheme_of(url)
    if scheme in _registry:
        return scheme
    # "postgresql+asyncpg://" names a dialect and a driver; fall back to the dialect.
    dialect = scheme.partition("+")[0]
    if dialect in _registry:
        return dialect
    known = ", ".join(f"{s}://" for s in sorted(_registry))
    raise ConfigurationError(
        f"no run store for {redact(url)!r}: unknown scheme {scheme!r}. Known schemes: "
        f"{known}. A third-party backend must be registered with "
        "kitaru.storage.register_store() before it is opened."
    )


def _import(key: str, url: str) -> type[Any]:
    target = _registry[key]
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(f"{missing}."):
            hint = _hints.get(key, f"install the package that provides {module_name!r}")
        else:  # the backend is there but one of its own dependencies is not
            hint = f"install {missing!r} (pip install {missing.split('.')[0]})"
        raise ConfigurationError(
            f"cannot open {redact(url)!r}: backend module {module_name!r} is not "
            f"available ({exc}); {hint}"
        ) from exc
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ConfigurationError(
            f"cannot open {redact(url)!r}: {module_name!r} has no class {attr!r}; "
            f"check the target registered for {key!r}"
        )
    return cls


def _describe(target: StoreTarget) -> str:
    if isinstance(target, str):
        return repr(target)
    return f"{target.__module__}:{target.__qualname__}"
