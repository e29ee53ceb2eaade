"""SQLite run store: the embedded default, one file, WAL mode, many readers.

:class:`SQLiteStore` lives in ``_store``; its SQL in ``_ops``; the group
committer that batches its writers' transactions in ``_group_commit``.
"""

from ._store import SQLiteStore as SQLiteStore

__all__ = ("SQLiteStore",)
