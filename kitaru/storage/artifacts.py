"""Content-addressed artifact store over any fsspec URL.

Large checkpoint values and saved artifacts live here as immutable blobs named
by their SHA-256: the ref ``"sha256:<hex>"`` is stored at
``<root>/<hex[:2]>/<hex[2:]>``. Equal content is stored once, a ref never
changes meaning, and every read is checked against its hash.

The URL picks the filesystem: a plain path (``.kitaru/artifacts``) or
``file://…`` for local folders, ``memory://…`` for tests, and any installed
fsspec implementation for remote stores (``s3://bucket/prefix`` needs
``pip install 'kitaru[s3]'``).

Nothing blocks the event loop: filesystems that implement
``fsspec.asyn.AsyncFileSystem`` are driven through their coroutines on the
running asyncio loop; every other call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from kitaru._errors import ConfigurationError, StorageError
from kitaru.storage._url import redact

__all__ = ("FsspecArtifactStore", "open_artifacts")

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_REF = re.compile(r"^sha256:([0-9a-f]{64})$")
# Hashing releases the GIL; above this size it is worth a thread hop.
_HASH_IN_THREAD = 1 << 20
# kitaru extras that install the fsspec implementation of a protocol.
_EXTRAS = {"s3": "s3", "s3a": "s3"}
_LOCAL_PROTOCOLS = frozenset({"file", "local"})

_Mode = Literal["local", "thread", "async"]


class FsspecArtifactStore:
    """Content-addressed blob store on any fsspec filesystem.

    The constructor does no I/O; call :meth:`open` (or use ``async with``)
    before :meth:`put` and :meth:`get`. A store opened on an asyncio loop with
    an async filesystem (S3, GCS, …) is bound to that loop.

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
        self._fs: Any = None
        self._root = ""
        self._mode: _Mode = "thread"
        self._closed = False
        # digest -> event set when this process's write of that content ends.
        self._inflight: dict[str, anyio.Event] = {}

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({redact(self.url)!r})"

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
            raise StorageError(f"artifact store {redact(self.url)} is closed")
        if self._fs is not None:
            return self
        url = self.url
        is_async = await _call_config(url, _is_async_class, url)
        # fsspec's async filesystems run on asyncio only; on another backend
        # (trio) they are built in sync mode and called from threads.
        if is_async and _on_asyncio():
            # Built here: an async filesystem belongs to the running loop.
            fs, root = _translating(url, _make_fs, url, True)
            try:
                await _start_session(fs)
            except Exception as exc:
                raise self._error("cannot connect to", exc) from exc
            mode: _Mode = "async"
        else:
            fs, root = await _call_config(url, _make_fs, url, False)
            mode = "local" if _is_local(fs) else "thread"
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
                await _close_async_fs(fs)
            if self._closed:
                raise StorageError(f"artifact store {redact(self.url)} is closed")
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
            StorageError: ``ref`` is malformed, no object is stored under it,
                the stored bytes do not match it, the store is not open, or
                the filesystem failed.
        """
        fs = self._require_open()
        digest = _parse_ref(ref)
        key = self._key(digest)
        try:
            if self._mode == "local":
                data = await anyio.to_thread.run_sync(_local_get, key)
            elif self._mode == "thread":
                data = await anyio.to_thread.run_sync(fs.cat_file, key)
            else:
                data = await fs._cat_file(key)
        except FileNotFoundError as exc:
            raise StorageError(
                f"artifact {ref} not found in artifact store {redact(self.url)}: it was "
                "deleted, or was written to another store (check the artifact store URL)"
            ) from exc
        except Exception as exc:
            raise self._error(f"cannot read artifact {ref} from", exc) from exc
        data = bytes(data)
        actual = await _sha256(data)
        if actual != digest:
            raise StorageError(
                f"artifact {ref} in artifact store {redact(self.url)} is corrupted: its "
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
            await _close_async_fs(fs)

    # -- internals -------------------------------------------------------------

    def _require_open(self) -> Any:
        if self._fs is None:
            state = "closed" if self._closed else "not open: call 'await store.open()' first"
            raise StorageError(f"artifact store {redact(self.url)} is {state}")
        return self._fs

    def _key(self, digest: str) -> str:
        prefix = self._root if not self._root or self._root.endswith("/") else self._root + "/"
        return f"{prefix}{digest[:2]}/{digest[2:]}"

    def _error(self, action: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"{action} artifact store {redact(self.url)}: {type(exc).__name__}: {exc}"
        )

    async def _write(self, digest: str, data: bytes) -> None:
        fs = self._require_open()
        key = self._key(digest)
        try:
            if self._mode == "local":
                await anyio.to_thread.run_sync(_local_put, key, data)
            elif self._mode == "thread":
                await anyio.to_thread.run_sync(_fs_put, fs, key, data)
            elif await _async_size(fs, key) != len(data):
                # Object stores make a PUT visible only once complete.
                await fs._pipe_file(key, data)
        except Exception as exc:
            raise self._error(f"cannot write artifact sha256:{digest} to", exc) from exc


async def open_artifacts(url: str) -> FsspecArtifactStore:
    """Create and open the artifact store at ``url``.

    Args:
        url: a local folder (``.kitaru/artifacts``), ``file://…``,
            ``memory://…`` or any fsspec URL such as ``s3://bucket/prefix``.

    Returns:
        The open store; close it with ``await store.aclose()``.

    Raises:
        ConfigurationError: the URL is invalid or its filesystem is not installed.
        StorageError: the filesystem cannot be created.
    """
    return await FsspecArtifactStore(url).open()


# -- helpers -------------------------------------------------------------------


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


def _protocols(url: str) -> list[str]:
    from fsspec.core import split_protocol  # type: ignore[import-untyped]

    return [split_protocol(part)[0] or "file" for part in url.split("::")]


def _is_async_class(url: str) -> bool:
    import fsspec  # type: ignore[import-untyped]
    from fsspec.asyn import AsyncFileSystem  # type: ignore[import-untyped]

    cls = fsspec.get_filesystem_class(_protocols(url)[0])
    return isinstance(cls, type) and issubclass(cls, AsyncFileSystem)


def _make_fs(url: str, asynchronous: bool) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    options: dict[str, Any] = {"skip_instance_cache": True}
    if asynchronous:
        options["asynchronous"] = True
    # Our own instance: fsspec's cached instances are shared process-wide.
    fs, root = url_to_fs(url, **options)
    return fs, str(root)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

    return isinstance(fs, LocalFileSystem)


def _config_error(url: str, exc: Exception) -> ConfigurationError:
    shown = redact(url)
    if isinstance(exc, ImportError):
        hint = str(exc) or type(exc).__name__
        extras = sorted({_EXTRAS[p] for p in _safe_protocols(url) if p in _EXTRAS})
        install = "".join(f"; pip install 'kitaru[{extra}]'" for extra in extras)
        return ConfigurationError(
            f"artifact store {shown} needs a filesystem that is not installed: {hint}{install}"
        )
    if isinstance(exc, ValueError) and "protocol not known" in str(exc).lower():
        return ConfigurationError(
            f"artifact store {shown} has an unknown protocol ({exc}): use a folder, "
            "'file://…', 'memory://…' or an fsspec URL such as 's3://bucket/prefix'"
        )
    return ConfigurationError(f"invalid artifact store {shown}: {type(exc).__name__}: {exc}")


def _safe_protocols(url: str) -> list[str]:
    try:
        return _protocols(url)
    except Exception:
        return []


def _translate(url: str, exc: Exception) -> Exception:
    if isinstance(exc, ImportError | ValueError | TypeError):
        return _config_error(url, exc)
    return StorageError(
        f"cannot create the filesystem of artifact store {redact(url)}: {type(exc).__name__}: {exc}"
    )


def _translating(url: str, func: Callable[..., _T], *args: Any) -> _T:
    # Only errors of ``func`` itself are translated, not those of the thread
    # machinery around it.
    try:
        return func(*args)
    except Exception as exc:
        raise _translate(url, exc) from exc


async def _call_config(url: str, func: Callable[..., _T], *args: Any) -> _T:
    """Run ``func`` in a thread: it may import a driver or connect."""
    return await anyio.to_thread.run_sync(functools.partial(_translating, url, func, *args))


async def _start_session(fs: Any) -> None:
    # s3fs, gcsfs and HTTP need their client created on the loop before use.
    set_session = getattr(fs, "set_session", None)
    if set_session is not None:
        result = set_session()
        if inspect.isawaitable(result):
            await result


async def _close_async_fs(fs: Any) -> None:
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


async def _async_size(fs: Any, key: str) -> int | None:
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


def _fs_put(fs: Any, key: str, data: bytes) -> bool:
    """Write ``data`` at ``key`` unless a complete copy is there (sync filesystems)."""
    try:
        existing = _size_of(fs.info(key))
    except FileNotFoundError:
        existing = None
    if existing == len(data):
        return False
    try:
        fs.pipe_file(key, data)
    except FileNotFoundError:
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


def _local_put(path: str, data: bytes) -> bool:
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


def _local_get(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
