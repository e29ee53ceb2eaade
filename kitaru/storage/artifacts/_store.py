"""The content-addressed artifact store over any fsspec URL.

URLs, options and credentials are told in :mod:`kitaru.storage.artifacts`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from kitaru._errors import ArtifactUnreadable, ConfigurationError, StorageError

from . import _fs
from ._errors import call_config, config_error, hint, is_missing_bucket, translating
from ._fs import (
    async_size,
    close_async_fs,
    fs_put,
    is_async_class,
    is_local,
    make_fs,
    start_session,
)
from ._options import scrub, shown, split_options

__all__ = ("FsspecArtifactStore", "open_artifacts")


_T = TypeVar("_T")
_REF = re.compile(r"^sha256:([0-9a-f]{64})$")
# Hashing releases the GIL; above this size it is worth a thread hop.
_HASH_IN_THREAD = 1 << 20
_Mode = Literal["local", "thread", "async"]


class FsspecArtifactStore:
    """Content-addressed blob store on any fsspec filesystem.

    The constructor does no I/O; call :meth:`open` (or use ``async with``)
    before :meth:`put` and :meth:`get`. A store opened on an asyncio loop with
    an async filesystem (S3, GCS, …) is bound to that loop. The constructor
    raises :class:`~kitaru.ConfigurationError` for an empty URL, and for
    options in its query that are malformed or carry a credential.

    Attributes:
        url: the URL the store was created with.
    """

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(
                f"artifact store URL must be a non-empty string, got {url!r}; "
                "use a folder such as '.kitaru/artifacts' or a URL such as 's3://bucket/prefix'"
            )
        self.url = url
        # The filesystem's URL, and the options taken from the URL's query.
        self._target, self._options = split_options(url)
        self._fs: Any = None
        self._root = ""
        self._mode: _Mode = "thread"
        self._closed = False
        # digest -> event set when this process's write of that content ends.
        self._inflight: dict[str, anyio.Event] = {}

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({shown(self.url)!r})"

    async def __aenter__(self) -> FsspecArtifactStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> FsspecArtifactStore:
        """Create the filesystem (and the root folder of a local store).

        Calling it again on an open store does nothing.

        Returns:
            The store itself, so ``store = await FsspecArtifactStore(url).open()`` works.

        Raises:
            ConfigurationError: the URL's protocol is unknown, its fsspec
                implementation is not installed, or its options are invalid.
            StorageError: the filesystem or the root folder cannot be created,
                or the store was closed.
        """
        if self._closed:
            raise StorageError(f"artifact store {shown(self.url)} is closed")
        if self._fs is not None:
            return self
        url, target, options = self.url, self._target, self._options
        is_async = await call_config(url, is_async_class, target)
        # fsspec's async filesystems run on asyncio only; on another backend
        # (trio) they are built in sync mode and called from threads.
        if is_async and _on_asyncio():
            # Built here: an async filesystem belongs to the running loop.
            fs, root = translating(url, make_fs, target, options, True)
            try:
                await start_session(fs)
            except TypeError as exc:
                # s3fs hands options it does not know to its client session.
                raise config_error(url, exc) from exc
            except Exception as exc:
                raise self._error("cannot connect to", exc) from exc
            mode: _Mode = "async"
        else:
            fs, root = await call_config(url, make_fs, target, options, False)
            mode = "local" if is_local(fs) else "thread"
            if mode == "local":
                try:
                    await anyio.to_thread.run_sync(
                        functools.partial(os.makedirs, root, exist_ok=True)
                    )
                except Exception as exc:
                    raise self._error("cannot create the folder of", exc) from exc
        # aclose() or a concurrent open() may have run while we were awaiting.
        if self._closed or self._fs is not None:
            if mode == "async":
                await close_async_fs(fs)
            if self._closed:
                raise StorageError(f"artifact store {shown(self.url)} is closed")
            return self
        self._fs, self._root, self._mode = fs, root, mode
        return self

    async def put(self, data: bytes) -> str:
        """Store ``data`` and return its ref, ``"sha256:<hex>"``.

        Equal content gets the same ref and is written once: the write is
        skipped when a complete copy already exists. Local writes go to a
        temporary file that is renamed into place, so a crash never leaves a
        truncated blob under a valid key.

        Raises:
            StorageError: the store is not open, or the filesystem failed.
        """
        self._require_open()
        digest = await _sha256(data)
        # Concurrent puts of the same content in this process share one write;
        # the others then find the object and skip.
        while (pending := self._inflight.get(digest)) is not None:
            await pending.wait()
        done = anyio.Event()
        self._inflight[digest] = done
        try:
            await self._write(digest, data)
        finally:
            del self._inflight[digest]
            done.set()
        return f"sha256:{digest}"

    async def get(self, ref: str) -> bytes:
        """Return the bytes stored under ``ref``, checked against its hash.

        Raises:
            kitaru.ArtifactUnreadable: no object is stored under ``ref``, or the
                stored bytes do not match it (the data's fault: not retried).
            StorageError: ``ref`` is malformed, the store is not open, or the
                filesystem failed.
        """
        fs = self._require_open()
        digest = _parse_ref(ref)
        key = self._key(digest)
        try:
            if self._mode == "local":
                data = await anyio.to_thread.run_sync(_fs.local_get, key)
            elif self._mode == "thread":
                data = await anyio.to_thread.run_sync(fs.cat_file, key)
            else:
                data = await fs._cat_file(key)
        except FileNotFoundError as exc:
            if is_missing_bucket(exc):
                raise self._error(f"cannot read artifact {ref} from", exc) from exc
            raise ArtifactUnreadable(
                f"artifact {ref} not found in artifact store {shown(self.url)}: it was "
                "deleted, or was written to another store (check the artifact store URL)"
            ) from exc
        except Exception as exc:
            raise self._error(f"cannot read artifact {ref} from", exc) from exc
        data = bytes(data)
        actual = await _sha256(data)
        if actual != digest:
            raise ArtifactUnreadable(
                f"artifact {ref} in artifact store {shown(self.url)} is corrupted: its "
                f"{len(data)} stored bytes hash to sha256:{actual}. Restore the object "
                f"{key!r} from a backup or delete it so the value can be stored again"
            )
        return data

    async def aclose(self) -> None:
        """Release the filesystem; the store cannot be used afterwards.

        Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        fs, self._fs = self._fs, None
        if fs is not None and self._mode == "async":
            await close_async_fs(fs)

    # -- internals -------------------------------------------------------------

    def _require_open(self) -> Any:
        if self._fs is None:
            state = "closed" if self._closed else "not open: call 'await store.open()' first"
            raise StorageError(f"artifact store {shown(self.url)} is {state}")
        return self._fs

    def _key(self, digest: str) -> str:
        prefix = self._root if not self._root or self._root.endswith("/") else self._root + "/"
        return f"{prefix}{digest[:2]}/{digest[2:]}"

    def _error(self, action: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"{action} artifact store {shown(self.url)}: {type(exc).__name__}: "
            f"{scrub(str(exc))}{hint(exc)}"
        )

    async def _write(self, digest: str, data: bytes) -> None:
        fs = self._require_open()
        key = self._key(digest)
        try:
            if self._mode == "local":
                await anyio.to_thread.run_sync(_fs.local_put, key, data)
            elif self._mode == "thread":
                await anyio.to_thread.run_sync(fs_put, fs, key, data)
            elif await async_size(fs, key) != len(data):
                # Object stores make a PUT visible only once complete.
                await fs._pipe_file(key, data)
        except Exception as exc:
            raise self._error(f"cannot write artifact sha256:{digest} to", exc) from exc


async def open_artifacts(url: str) -> FsspecArtifactStore:
    """Create and open the artifact store at ``url``.

    Args:
        url: a local folder (``.kitaru/artifacts``), ``file://…``,
            ``memory://…`` or any fsspec URL such as ``s3://bucket/prefix``
            (``s3://bucket/prefix?endpoint_url=http://host:9000`` for an
            S3-compatible server).

    Returns:
        The open store; close it with ``await store.aclose()``.

    Raises:
        ConfigurationError: the URL is invalid or its filesystem is not installed.
        StorageError: the filesystem cannot be created.
    """
    return await FsspecArtifactStore(url).open()


def _parse_ref(ref: object) -> str:
    match = _REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise StorageError(
            f"malformed artifact ref {ref!r}: expected 'sha256:' followed by 64 "
            "lowercase hex digits, as returned by put()"
        )
    return match.group(1)


def _hexdigest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _sha256(data: bytes) -> str:
    if len(data) < _HASH_IN_THREAD:
        return _hexdigest(data)
    return await anyio.to_thread.run_sync(_hexdigest, data)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
