"""The filesystem under the artifact store: building it, and writing and reading blobs.

fsspec is imported here only, inside the functions, so importing kitaru never
imports it. Local folders get atomic writes (a temporary file renamed into
place, fsync'ed); other filesystems are asked for a complete copy first, so
equal content is written once.
"""

from __future__ import annotations

import inspect
import logging
import os
import posixpath
import uuid
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import anyio

from ._errors import is_missing_bucket
from ._options import protocols

__all__ = (
    "async_size",
    "close_async_fs",
    "fs_put",
    "is_async_class",
    "is_local",
    "local_get",
    "local_put",
    "make_fs",
    "start_session",
)


_log = logging.getLogger("kitaru.storage.artifacts")


def is_async_class(url: str) -> bool:
    import fsspec  # type: ignore[import-untyped]
    from fsspec.asyn import AsyncFileSystem  # type: ignore[import-untyped]

    cls = fsspec.get_filesystem_class(protocols(url)[0])
    return isinstance(cls, type) and issubclass(cls, AsyncFileSystem)


def make_fs(url: str, options: Mapping[str, Any], asynchronous: bool) -> tuple[Any, str]:
    from fsspec.core import url_to_fs  # type: ignore[import-untyped]

    # Our own instance: fsspec's cached instances are shared process-wide.
    kwargs: dict[str, Any] = {"skip_instance_cache": True}
    if asynchronous:
        kwargs["asynchronous"] = True
    if options:
        if "::" in url:
            # In a chain, the query belongs to the last URL: fsspec takes the
            # options of a chained filesystem under its protocol's name.
            kwargs[protocols(url)[-1]] = dict(options)
        else:
            kwargs.update(options)
    fs, root = url_to_fs(url, **kwargs)
    return fs, str(root)


def is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

    return isinstance(fs, LocalFileSystem)


async def start_session(fs: Any) -> None:
    # s3fs, gcsfs and HTTP need their client created on the loop before use.
    set_session = getattr(fs, "set_session", None)
    if set_session is not None:
        result = set_session()
        if inspect.isawaitable(result):
            await result


async def close_async_fs(fs: Any) -> None:
    """Close the client session of an async filesystem, best effort."""
    set_session = getattr(fs, "set_session", None)
    if set_session is None:
        return
    # Shielded: aclose() often runs while the caller is being cancelled.
    with anyio.move_on_after(10, shield=True):
        try:
            session = set_session()
            if inspect.isawaitable(session):
                session = await session
            close = getattr(session, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result
        except Exception:
            _log.debug("closing the artifact filesystem failed", exc_info=True)


async def async_size(fs: Any, key: str) -> int | None:
    try:
        info = await fs._info(key)
    except FileNotFoundError:
        return None
    return _size_of(info)


def _size_of(info: Any) -> int | None:
    if not isinstance(info, dict) or info.get("type") == "directory":
        return None
    size = info.get("size")
    return int(size) if size is not None else None


def fs_put(fs: Any, key: str, data: bytes) -> bool:
    """Write ``data`` at ``key`` unless a complete copy is there (sync filesystems)."""
    try:
        existing = _size_of(fs.info(key))
    except FileNotFoundError:
        existing = None
    if existing == len(data):
        return False
    try:
        fs.pipe_file(key, data)
    except FileNotFoundError as exc:
        if is_missing_bucket(exc):
            raise  # s3fs's makedirs would create the bucket
        # Filesystems with real folders (SFTP, SMB, …) need the shard folder.
        fs.makedirs(posixpath.dirname(key), exist_ok=True)
        fs.pipe_file(key, data)
    return True


def _local_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _fsync_dir(folder: str) -> None:
    # Makes a rename durable on POSIX; not possible (nor needed) on Windows.
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def local_put(path: str, data: bytes) -> bool:
    """Atomically write ``data`` at ``path`` unless a complete copy is there.

    Returns whether this call wrote the file.
    """
    if _local_size(path) == len(data):
        return False
    folder = os.path.dirname(path)
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    # Hidden temporary name in the same folder: same filesystem, so the
    # rename is atomic, and never a valid key.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError:
        with suppress(OSError):
            os.unlink(tmp)
        # A concurrent writer (another process) may hold the target open on
        # Windows; its complete copy is as good as ours.
        if _local_size(path) == len(data):
            return False
        raise
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    if created:
        _fsync_dir(os.path.dirname(folder))
    return True


def local_get(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
