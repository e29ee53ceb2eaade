"""Where runs, journals and artifacts live, chosen by URL.

``open_store("sqlite:///kitaru.db")`` picks the backend from the URL's scheme
(importing it only then) and opens it. Backend authors implement the
:class:`RunStore` Protocol and call :func:`register_store`; a backend that
can do more declares it by also satisfying the capability Protocols
(:class:`BulkClaims`, :class:`SignalsChanges`, :class:`AnnouncesRunnable`),
which the runtime checks with ``isinstance``.
"""

from ._registry import open_store as open_store
from ._registry import register_store as register_store
from .base import AnnouncesRunnable as AnnouncesRunnable
from .base import ArtifactStore as ArtifactStore
from .base import BulkClaims as BulkClaims
from .base import JournalEntry as JournalEntry
from .base import Message as Message
from .base import RunPatch as RunPatch
from .base import RunRecord as RunRecord
from .base import RunStore as RunStore
from .base import SignalsChanges as SignalsChanges

__all__ = (
    "AnnouncesRunnable",
    "ArtifactStore",
    "BulkClaims",
    "JournalEntry",
    "Message",
    "RunPatch",
    "RunRecord",
    "RunStore",
    "SignalsChanges",
    "open_store",
    "register_store",
)
