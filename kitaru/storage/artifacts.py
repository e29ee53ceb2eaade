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

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode

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
# Protocols whose URL query is not ours to read: a path or a real HTTP query.
_NO_OPTIONS = frozenset({"file", "local", "memory", "http", "https"})
# Options kitaru sets itself.
_RESERVED_OPTIONS = frozenset({"asynchronous", "loop", "skip_instance_cache"})
# Option names that would put a credential in the URL.
_SECRET_OPTION = re.compile(
    r"secret|token|passw|pwd|credential|signature|sas|(?:^|_)key(?:$|_)", re.IGNORECASE
)
# Options that a protocol's filesystem passes to its client (``client_kwargs``).
_CLIENT_OPTIONS = {"s3": frozenset({"region_name"}), "s3a": frozenset({"region_name"})}
_INTEGER = re.compile(r"^-?[0-9]+$")
_MASK = "***"
# ``scheme://user:password@`` inside free text (a driver's error message).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")
# Exception classes (by name, anywhere in the MRO) meaning the server did not
# answer: builtins, botocore's and aiohttp's.
_CONNECTION_ERRORS = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ClientConnectorError",
        "ServerDisconnectedError",
    }
)

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
        self._target, self._options = _split_options(url)
        self._fs: Any = None
        self._root = ""
        self._mode: _Mode = "thread"
        self._closed = False
        # digest -> event set when this process's write of that content ends.
        self._inflight: dict[str, anyio.Event] = {}

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({_shown(self.url)!r})"

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
            raise StorageError(f"artifact store {_shown(self.url)} is closed")
        if self._fs is not None:
            return self
        url, target, options = self.url, self._target, self._options
        is_async = await _call_config(url, _is_async_class, target)
        # fsspec's async filesystems run on asyncio only; on another backend
        # (trio) they are built in sync mode and called from threads.
        if is_async and _on_asyncio():
            # Built here: an async filesystem belongs to the running loop.
            fs, root = _translating(url, _make_fs, target, options, True)
            try:
                await _start_session(fs)
            except TypeError as exc:
                # s3fs hands options it does not know to its client session.
                raise _config_error(url, exc) from exc
            except Exception as exc:
                raise self._error("cannot connect to", exc) from exc
            mode: _Mode = "async"
        else:
            fs, root = await _call_config(url, _make_fs, target, options, False)
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
                raise StorageError(f"artifact store {_shown(self.url)} is closed")
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
            if _is_missing_bucket(exc):
                raise self._error(f"cannot read artifact {ref} from", exc) from exc
            raise StorageError(
                f"artifact {ref} not found in artifact store {_shown(self.url)}: it was "
                "deleted, or was written to another store (check the artifact store URL)"
            ) from exc
        except Exception as exc:
            raise self._error(f"cannot read artifact {ref} from", exc) from exc
        data = bytes(data)
        actual = await _sha256(data)
        if actual != digest:
            raise StorageError(
                f"artifact {ref} in artifact store {_shown(self.url)} is corrupted: its "
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
            raise StorageError(f"artifact store {_shown(self.url)} is {state}")
        return self._fs

    def _key(self, digest: str) -> str:
        prefix = self._root if not self._root or self._root.endswith("/") else self._root + "/"
        return f"{prefix}{digest[:2]}/{digest[2:]}"

    def _error(self, action: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"{action} artifact store {_shown(self.url)}: {type(exc).__name__}: "
            f"{_scrub(str(exc))}{_hint(exc)}"
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


def _make_fs(url: str, options: Mapping[str, Any], asynchronous: bool) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    # Our own instance: fsspec's cached instances are shared process-wide.
    kwargs: dict[str, Any] = {"skip_instance_cache": True}
    if asynchronous:
        kwargs["asynchronous"] = True
    if options:
        if "::" in url:
            # In a chain, the query belongs to the last URL: fsspec takes the
            # options of a chained filesystem under its protocol's name.
            kwargs[_protocols(url)[-1]] = dict(options)
        else:
            kwargs.update(options)
    fs, root = url_to_fs(url, **kwargs)
    return fs, str(root)


def _split_options(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``scheme://path?name=value&…`` into the filesystem URL and its options.

    Raises:
        ConfigurationError: the query is malformed, repeats an option, sets one
            that kitaru sets itself, or carries a credential.
    """
    head, chain, last = url.rpartition("::")
    scheme, sep, _ = last.partition("://")
    path, qmark, query = last.partition("?")
    if not sep or not qmark or scheme.lower() in _NO_OPTIONS:
        return url, {}
    protocol = scheme.lower()
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise ConfigurationError(
            f"artifact store {_shown(url)} has a malformed query ({exc}): "
            "write options as '?name=value&name=value'"
        ) from None
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for name, text in pairs:
        if name in options or name in client:
            raise ConfigurationError(f"artifact store {_shown(url)} sets option {name!r} twice")
        if name in _RESERVED_OPTIONS:
            raise ConfigurationError(
                f"artifact store {_shown(url)} sets option {name!r}, which kitaru sets itself; "
                "remove it from the URL"
            )
        value = _option_value(url, name, text)
        secret = _secret_name(name, value)
        if secret is not None:
            raise ConfigurationError(
                f"artifact store {_shown(url)} carries a credential in option {secret!r}: "
                "URLs end up in configuration and log lines, so kitaru takes no credentials "
                "from them. Remove it and give credentials through the environment "
                "(for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), "
                "a credentials file or an instance role"
            )
        if name in _CLIENT_OPTIONS.get(protocol, ()):
            client[name] = value
        else:
            options[name] = value
    if client:
        given = options.get("client_kwargs", {})
        if not isinstance(given, dict):
            raise ConfigurationError(
                f"artifact store {_shown(url)}: option 'client_kwargs' must be a JSON object"
            )
        options["client_kwargs"] = {**given, **client}
    return f"{head}{chain}{path}", options


def _option_value(url: str, name: str, text: str) -> Any:
    """Decode booleans, integers and JSON objects or lists; keep anything else as text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INTEGER.match(text):
        return int(text)
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(
                f"artifact store {_shown(url)}: option {name!r} is not valid JSON ({exc})"
            ) from None
    return text


def _secret_name(name: str, value: Any) -> str | None:
    """The name of a credential in option ``name`` (or nested in its JSON value), if any."""
    if _SECRET_OPTION.search(name):
        return name
    if isinstance(value, dict):
        for key, item in value.items():
            found = _secret_name(str(key), item)
            if found is not None:
                return f"{name}.{found}"
    return None


def _shown(url: str) -> str:
    """``url`` as it may appear in a message: passwords and credential options masked.

    Beyond :func:`~kitaru.storage._url.redact`, options named like a
    credential are masked, and so are passwords in options that are URLs
    (an ``endpoint_url`` with user info).
    """
    head, chain, last = url.rpartition("::")
    path, qmark, query = last.partition("?")
    if not qmark:
        return redact(url)
    base = redact(f"{head}{chain}{path}")
    pairs = parse_qsl(query, keep_blank_values=True)
    masked = [
        (name, _MASK if _SECRET_OPTION.search(name) or _has_secret(text) else redact(text))
        for name, text in pairs
    ]
    if masked == pairs:
        return f"{base}?{query}"
    return f"{base}?{urlencode(masked, safe='*:/@')}"


def _scrub(text: str) -> str:
    """Mask passwords of URLs quoted in ``text`` (drivers quote their endpoint)."""
    return _USERINFO.sub(rf"\1:{_MASK}@", text)


def _has_secret(text: str) -> bool:
    """Whether an option's text is a JSON object holding a credential."""
    if not text.startswith("{"):
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return _secret_name("", value) is not None


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

    return isinstance(fs, LocalFileSystem)


def _config_error(url: str, exc: Exception) -> ConfigurationError:
    shown = _shown(url)
    detail = _scrub(str(exc))
    if isinstance(exc, ImportError):
        hint = detail or type(exc).__name__
        extras = sorted({_EXTRAS[p] for p in _safe_protocols(url) if p in _EXTRAS})
        install = "".join(f"; pip install 'kitaru[{extra}]'" for extra in extras)
        return ConfigurationError(
            f"artifact store {shown} needs a filesystem that is not installed: {hint}{install}"
        )
    if isinstance(exc, ValueError) and "protocol not known" in str(exc).lower():
        return ConfigurationError(
            f"artifact store {shown} has an unknown protocol ({detail}): use a folder, "
            "'file://…', 'memory://…' or an fsspec URL such as 's3://bucket/prefix'"
        )
    if isinstance(exc, TypeError) and "?" in url:
        return ConfigurationError(
            f"invalid artifact store {shown}: {type(exc).__name__}: {detail}. Each option in "
            "the URL's query must be a keyword argument of the fsspec filesystem "
            "(for s3://, of s3fs.S3FileSystem, such as endpoint_url or region_name)"
        )
    return ConfigurationError(f"invalid artifact store {shown}: {type(exc).__name__}: {detail}")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _is_missing_bucket(exc: BaseException) -> bool:
    for cause in _causes(exc):
        response = getattr(cause, "response", None)
        error = response.get("Error") if isinstance(response, dict) else None
        if isinstance(error, dict) and error.get("Code") in ("NoSuchBucket", "ContainerNotFound"):
            return True
    return isinstance(exc, FileNotFoundError) and "bucket does not exist" in str(exc).lower()


def _is_unreachable(exc: BaseException) -> bool:
    return any(
        cls.__name__ in _CONNECTION_ERRORS for cause in _causes(exc) for cls in type(cause).__mro__
    )


def _hint(exc: BaseException) -> str:
    """What to do about a filesystem error, when its kind says it."""
    if _is_missing_bucket(exc):
        return (
            ". The bucket does not exist: create it (kitaru does not create buckets), "
            "or fix the bucket name in the artifact store URL"
        )
    if isinstance(exc, PermissionError):
        return (
            ". Access was denied: check the credentials (for S3: AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and that they may read and write "
            "objects under this prefix"
        )
    if _is_unreachable(exc):
        return (
            ". The object store did not answer: check that it is running and reachable; "
            "for an S3-compatible server, its address comes from the URL's endpoint_url "
            "option or from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL"
        )
    return ""


def _safe_protocols(url: str) -> list[str]:
    try:
        return _protocols(url)
    except Exception:
        return []


def _translate(url: str, exc: Exception) -> Exception:
    if isinstance(exc, ImportError | ValueError | TypeError):
        return _config_error(url, exc)
    return StorageError(
        f"cannot create the filesystem of artifact store {_shown(url)}: "
        f"{type(exc).__name__}: {_scrub(str(exc))}"
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
    except FileNotFoundError as exc:
        if _is_missing_bucket(exc):
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
