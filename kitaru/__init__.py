"""kitaru: durable execution for Python agents, built as an async-native actor runtime.

Layering, bottom up (each layer imports only the ones below it; see
``docs/architecture.md``): the ground modules (``_errors``, ``_types``,
``_clock``, ``_config``, ``_tracing``); ``kitaru.storage`` (the run store
Protocol, its backends, artifacts, typed serialisation); ``journal`` (one
run's journal and the one durable-call routine); ``actors`` (flow actors and
their supervisor); ``_runtime`` (the Runtime: placement, replay, inspection);
``_llm``; then the public face here: ``@flow``, ``@checkpoint``, the
primitives and the records and errors they return; ``integrations`` and the
command line sit on top. Everything not re-exported here is private.
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import checkpoint as checkpoint
from ._config import RuntimeConfig as RuntimeConfig
from ._config import configure as configure
from ._errors import ArtifactNotFound as ArtifactNotFound
from ._errors import ArtifactUnreadable as ArtifactUnreadable
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import CheckpointFailed as CheckpointFailed
from ._errors import ConfigurationError as ConfigurationError
from ._errors import FlowCancelled as FlowCancelled
from ._errors import FlowFailed as FlowFailed
from ._errors import InvalidMessage as InvalidMessage
from ._errors import KitaruError as KitaruError
from ._errors import NonDeterminismError as NonDeterminismError
from ._errors import NotInFlow as NotInFlow
from ._errors import ReplayError as ReplayError
from ._errors import RunFinished as RunFinished
from ._errors import RunNotFound as RunNotFound
from ._errors import RuntimeStateError as RuntimeStateError
from ._errors import SchemaVersionError as SchemaVersionError
from ._errors import SerializationError as SerializationError
from ._errors import StorageError as StorageError
from ._errors import WaitTimeout as WaitTimeout
from ._flow import Flow as Flow
from ._flow import flow as flow
from ._named import load as load
from ._named import log as log
from ._named import save as save
from ._primitives import Message as Message
from ._primitives import continue_as_new as continue_as_new
from ._primitives import receive as receive
from ._primitives import send as send
from ._primitives import sleep as sleep
from ._primitives import wait as wait
from ._runtime import Runtime as Runtime
from ._runtime import runtime as runtime
from ._types import Backoff as Backoff
from ._types import Budget as Budget
from ._types import CheckpointInfo as CheckpointInfo
from ._types import RunHandle as RunHandle
from ._types import RunInfo as RunInfo
from ._types import RunStatus as RunStatus
from ._types import Usage as Usage
from ._types import WaitInfo as WaitInfo
from ._version import __version__ as __version__

__all__ = (
    "ArtifactNotFound",
    "ArtifactUnreadable",
    "Backoff",
    "Budget",
    "BudgetExceeded",
    "Checkpoint",
    "CheckpointFailed",
    "CheckpointInfo",
    "ConfigurationError",
    "Flow",
    "FlowCancelled",
    "FlowFailed",
    "InvalidMessage",
    "KitaruError",
    "NonDeterminismError",
    "Message",
    "NotInFlow",
    "ReplayError",
    "RunHandle",
    "RunFinished",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "Runtime",
    "RuntimeConfig",
    "RuntimeStateError",
    "SchemaVersionError",
    "SerializationError",
    "StorageError",
    "Usage",
    "WaitInfo",
    "WaitTimeout",
    "__version__",
    "checkpoint",
    "configure",
    "continue_as_new",
    "flow",
    "llm",
    "load",
    "log",
    "receive",
    "runtime",
    "save",
    "send",
    "sleep",
    "wait",
)

# Tracebacks and reprs say kitaru.FlowFailed, not kitaru._errors.FlowFailed.
if _TYPE_CHECKING:
    from ._llm._call import llm as llm

for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__


def __getattr__(name: str) -> _Any:
    # ``kitaru.llm`` (and what it needs) is imported on first use, so that
    # ``import kitaru`` stays cheap for code that never calls a model.
    if name == "llm":
        from ._llm._call import llm

        globals()["llm"] = llm
        return llm
    raise AttributeError(f"module 'kitaru' has no attribute {name!r}")


_logging.getLogger(__name__).addHandler(_logging.NullHandler())
