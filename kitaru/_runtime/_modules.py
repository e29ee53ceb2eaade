"""Importing the modules that define flows: ``kitaru worker``, ``serve`` and ``replay --module``.

A module is named like ``python -m`` names it (``my_app.agents``, looked up
from the current folder too) or by the path of its ``.py`` file. A file is
imported under the dotted name it has on ``sys.path`` (its folder, or the
folder above its package), never as ``__main__`` and never under a second
name, so a flow is the same object however its module is reached.

Mistakes (no such module, a module that raises, a module without flows) are
:class:`kitaru.ConfigurationError`, reported by the command line as one line.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from .._errors import ConfigurationError

__all__ = ("import_module_spec", "load_flows")

F = TypeVar("F")

log = logging.getLogger("kitaru.worker")


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or bool(os.altsep and os.altsep in spec)


def _name_for_file(path: Path) -> tuple[str, Path]:
    """The dotted module name of ``path`` and the folder that must be on ``sys.path``."""
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if not parts:
        raise ConfigurationError(
            f"{path} is a package's __init__.py; pass the package's folder name"
        )
    return ".".join(parts), folder


def import_module_spec(spec: str) -> ModuleType:
    """Import a dotted module name or a ``.py`` file.

    Raises:
        kitaru.ConfigurationError: the module cannot be found, or raised while it was imported.
    """
    if _is_path(spec):
        path = Path(spec).resolve()
        if not path.is_file():
            raise ConfigurationError(f"no such file: {spec}")
        name, folder = _name_for_file(path)
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        loaded = sys.modules.get(name)
        where = getattr(loaded, "__file__", None)
        if loaded is not None and (where is None or Path(where).resolve() != path):
            raise ConfigurationError(
                f"cannot import {spec} as module {name!r}: that name is already taken by "
                f"{where or 'a built-in module'}; rename the file"
            )
    else:
        name = spec
        # `python -m` puts the current folder first; the console script does not.
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise ConfigurationError(
                f"no module named {name!r}; run the worker from the folder that holds it, "
                "or pass the path of its .py file"
            ) from None
        raise ConfigurationError(f"cannot import {spec}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        log.debug("importing %s failed", spec, exc_info=True)
        detail = " ".join(str(exc).split())
        raise ConfigurationError(f"cannot import {spec}: {type(exc).__name__}: {detail}") from None


def load_flows(specs: Sequence[str], kind: type[F]) -> list[F]:
    """Every ``kind`` (:class:`kitaru.Flow`) among the globals of the named modules.

    The caller names the class, so this layer needs nothing from the public face.

    Raises:
        kitaru.ConfigurationError: a module cannot be imported or defines no flow.
    """
    flows: dict[int, F] = {}
    for spec in specs:
        module = import_module_spec(spec)
        found = [v for v in vars(module).values() if isinstance(v, kind)]
        if not found:
            raise ConfigurationError(
                f"module {module.__name__} ({spec}) has no flows: a worker hosts functions "
                "decorated with @kitaru.flow at module level"
            )
        for f in found:
            flows.setdefault(id(f), f)
    return list(flows.values())
