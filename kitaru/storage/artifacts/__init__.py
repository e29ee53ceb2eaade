"""Content-addressed artifact store over any fsspec URL.

Large checkpoint values and saved artifacts live here as immutable blobs named
by their SHA-256: the ref ``"sha256:<hex>"`` is stored at
``<root>/<hex[:2]>/<hex[2:]>``. Equal content is stored once, a ref never
changes meaning, and every read is checked against its hash.

The URL picks the filesystem: a plain path (``.kitaru/artifacts``) or
``file://…`` for local folders, ``memory://…`` for tests, and any installed
fsspec implementation for remote stores (``s3://bucket/prefix`` needs
``pip install 'kitaru[s3]'``).

Options of a remote filesystem go in the URL's query: each ``name=value``
becomes a keyword argument of the fsspec filesystem (for s3fs, ``endpoint_url``,
``use_ssl``, ``anon``, …; for ``s3://``, ``region_name`` goes to the client).
Values ``true``/``false``, integers and JSON objects or lists are decoded;
anything else stays a string. (In paths and ``file://``, ``memory://`` and
``http(s)://`` URLs a ``?`` is left alone.) So an S3-compatible server
(MinIO, Ceph, moto) is::

    s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000

The bucket must exist already. Credentials never go in the URL (it ends up in
configuration and log lines): options such as ``key``, ``secret`` or
``token`` are refused. Give them, and the endpoint if you prefer, through the
environment that botocore reads itself: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, and ``AWS_MAX_ATTEMPTS`` to bound retries; or through
``~/.aws/config`` and an instance role. An ``endpoint_url`` in the URL wins
over the environment.

Nothing blocks the event loop: filesystems that implement
``fsspec.asyn.AsyncFileSystem`` are driven through their coroutines on the
running asyncio loop; every other call runs in a worker thread.
"""

from typing import TYPE_CHECKING, Any

from ._lazy import LazyArtifacts as LazyArtifacts

if TYPE_CHECKING:
    from ._store import FsspecArtifactStore as FsspecArtifactStore
    from ._store import open_artifacts as open_artifacts

__all__ = ("FsspecArtifactStore", "LazyArtifacts", "open_artifacts")


def __getattr__(name: str) -> Any:
    # The store itself is imported on first use: every runtime holds a
    # LazyArtifacts, most never open it, and ``import kitaru`` stays light.
    if name in ("FsspecArtifactStore", "open_artifacts"):
        from . import _store

        return getattr(_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
