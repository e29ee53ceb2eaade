"""Tests of the fsspec artifact store: local folders, file://, memory:// and async filesystems."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from kitaru import ArtifactUnreadable, ConfigurationError, StorageError
from kitaru.storage import ArtifactStore
from kitaru.storage.artifacts import FsspecArtifactStore, _fs, open_artifacts
from kitaru.storage.artifacts import _store as artifact_store

HAS_TRIO = importlib.util.find_spec("trio") is not None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _memory_fs() -> Any:
    # fsspec is imported lazily everywhere, tests included (ruff TID253).
    import fsspec  # type: ignore[import-untyped]

    return fsspec.filesystem("memory")


def _register(protocol: str, target: Any, errtxt: str | None = None) -> None:
    import fsspec

    fsspec.register_implementation(protocol, target, clobber=True, errtxt=errtxt)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def memory_url() -> Iterator[str]:
    # fsspec's memory filesystem is process-global: a unique folder per test,
    # removed afterwards.
    path = f"/kitaru-tests/{uuid.uuid4().hex}"
    yield f"memory://{path}"
    fs = _memory_fs()
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture(params=["path", "file-url", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "path":
        return str(tmp_path / "artifacts")
    if request.param == "file-url":
        return (tmp_path / "artifacts").as_uri()
    return str(request.getfixturevalue("memory_url"))


# -- round trips on every local backend ---------------------------------------


@pytest.mark.anyio
async def test_put_get_round_trip(url: str) -> None:
    async with FsspecArtifactStore(url) as store:
        assert isinstance(store, ArtifactStore)
        ref = await store.put(b"hello artifacts")
        assert ref == f"sha256:{_hex(b'hello artifacts')}"
        assert await store.get(ref) == b"hello artifacts"


@pytest.mark.anyio
async def test_empty_value_round_trips(url: str) -> None:
    async with FsspecArtifactStore(url) as store:
        ref = await store.put(b"")
        assert await store.get(ref) == b""


@pytest.mark.anyio
async def test_same_content_same_ref_different_content_different_ref(url: str) -> None:
    async with FsspecArtifactStore(url) as store:
        first = await store.put(b"same")
        second = await store.put(b"same")
        other = await store.put(b"other")
        assert first == second
        assert other != first
        assert await store.get(first) == b"same"
        assert await store.get(other) == b"other"


@pytest.mark.anyio
async def test_large_value_round_trips(url: str) -> None:
    data = os.urandom(5 * 1024 * 1024)
    async with FsspecArtifactStore(url) as store:
        ref = await store.put(data)
        assert ref == f"sha256:{_hex(data)}"
        assert await store.get(ref) == data


@pytest.mark.anyio
async def test_missing_ref_names_the_ref_and_the_store(url: str) -> None:
    ref = f"sha256:{_hex(b'never stored')}"
    async with FsspecArtifactStore(url) as store:
        with pytest.raises(ArtifactUnreadable, match="not found") as info:
            await store.get(ref)
    assert ref in str(info.value)
    assert url in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "ref",
    [
        "",
        "sha256:",
        "abc",
        "sha256:" + "0" * 63,
        "sha256:" + "A" * 64,
        "md5:" + "0" * 32,
        "sha256:../../../etc/passwd",
        "sha256:" + "0" * 64 + "/x",
    ],
)
async def test_malformed_ref_is_a_clear_error(memory_url: str, ref: str) -> None:
    async with FsspecArtifactStore(memory_url) as store:
        with pytest.raises(StorageError, match="malformed artifact ref"):
            await store.get(ref)


@pytest.mark.anyio
async def test_concurrent_puts_of_distinct_values(url: str) -> None:
    values = [f"value {i}".encode() * (i + 1) for i in range(30)]
    refs: dict[int, str] = {}
    async with FsspecArtifactStore(url) as store:

        async def put(i: int) -> None:
            refs[i] = await store.put(values[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(values)):
                tg.start_soon(put, i)
        for i, value in enumerate(values):
            assert await store.get(refs[i]) == value


# -- local folders -------------------------------------------------------------


@pytest.mark.anyio
async def test_local_layout_is_content_addressed(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    async with FsspecArtifactStore(str(root)) as store:
        await store.put(b"layout")
    digest = _hex(b"layout")
    assert (root / digest[:2] / digest[2:]).read_bytes() == b"layout"
    assert [p.name for p in (root / digest[:2]).iterdir()] == [digest[2:]]


@pytest.mark.anyio
async def test_constructor_does_no_io_and_open_creates_the_root(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "artifacts"
    store = FsspecArtifactStore(str(root))
    assert not root.exists()
    with pytest.raises(StorageError, match="not open"):
        await store.put(b"x")
    assert await store.open() is store
    assert await store.open() is store  # idempotent
    assert root.is_dir()
    await store.aclose()


@pytest.mark.anyio
async def test_relative_path_is_resolved_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_artifacts(".kitaru/artifacts")
    try:
        monkeypatch.chdir(tmp_path.parent)
        ref = await store.put(b"relative")
        assert await store.get(ref) == b"relative"
    finally:
        await store.aclose()
    digest = _hex(b"relative")
    assert (tmp_path / ".kitaru" / "artifacts" / digest[:2] / digest[2:]).is_file()


@pytest.mark.anyio
async def test_same_content_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[str] = []
    real_replace = os.replace

    def counting_replace(src: Any, dst: Any) -> None:
        replaced.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", counting_replace)
    async with FsspecArtifactStore(str(tmp_path)) as store:
        await store.put(b"once")
        path = tmp_path / _hex(b"once")[:2] / _hex(b"once")[2:]
        before = path.stat().st_mtime_ns
        await store.put(b"once")
        await store.put(b"once")
    assert len(replaced) == 1
    assert path.stat().st_mtime_ns == before


@pytest.mark.anyio
async def test_fifty_concurrent_puts_of_same_content_make_one_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[str] = []
    real_replace = os.replace

    def counting_replace(src: Any, dst: Any) -> None:
        replaced.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", counting_replace)
    data = b"shared" * 10_000
    refs: list[str] = []
    async with FsspecArtifactStore(str(tmp_path)) as store:

        async def put() -> None:
            refs.append(await store.put(data))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(put)
        assert set(refs) == {f"sha256:{_hex(data)}"}
        assert len(refs) == 50
        assert await store.get(refs[0]) == data
    files = _files(tmp_path)
    assert len(files) == 1  # no temporary leftovers either
    assert len(replaced) == 1


@pytest.mark.anyio
async def test_fifty_concurrent_puts_on_memory_make_one_object(memory_url: str) -> None:
    data = b"shared memory"
    async with FsspecArtifactStore(memory_url) as store, anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(store.put, data)
    root = memory_url.removeprefix("memory://")
    found = _memory_fs().find(root)
    digest = _hex(data)
    assert found == [f"{root}/{digest[:2]}/{digest[2:]}"]


@pytest.mark.anyio
async def test_failed_write_leaves_no_blob_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    async with FsspecArtifactStore(str(tmp_path)) as store:
        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(StorageError, match="No space left") as info:
            await store.put(b"doomed")
        monkeypatch.undo()
        assert isinstance(info.value.__cause__, OSError)
        assert _files(tmp_path) == []
        # The store still works once the disk is fine.
        ref = await store.put(b"doomed")
        assert await store.get(ref) == b"doomed"


@pytest.mark.anyio
async def test_truncated_blob_is_rewritten_by_put(tmp_path: Path) -> None:
    data = b"complete content"
    digest = _hex(data)
    (tmp_path / digest[:2]).mkdir()
    (tmp_path / digest[:2] / digest[2:]).write_bytes(data[:5])
    async with FsspecArtifactStore(str(tmp_path)) as store:
        ref = await store.put(data)
        assert await store.get(ref) == data


@pytest.mark.anyio
async def test_corrupted_blob_is_detected_on_read(tmp_path: Path) -> None:
    async with FsspecArtifactStore(str(tmp_path)) as store:
        ref = await store.put(b"precious bytes")
        digest = _hex(b"precious bytes")
        (tmp_path / digest[:2] / digest[2:]).write_bytes(b"precious BYTES")
        with pytest.raises(ArtifactUnreadable, match="corrupted") as info:
            await store.get(ref)
    assert ref in str(info.value)


@pytest.mark.anyio
async def test_corrupted_blob_is_detected_on_memory(memory_url: str) -> None:
    async with FsspecArtifactStore(memory_url) as store:
        ref = await store.put(b"memory bytes")
        digest = _hex(b"memory bytes")
        root = memory_url.removeprefix("memory://")
        _memory_fs().pipe_file(f"{root}/{digest[:2]}/{digest[2:]}", b"x")
        with pytest.raises(ArtifactUnreadable, match="corrupted"):
            await store.get(ref)


@pytest.mark.anyio
async def test_local_io_never_blocks_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocking calls run in threads: the loop keeps running while they wait."""
    loop_thread = threading.get_ident()
    seen: list[int] = []
    entered = threading.Event()
    release = threading.Event()

    def gated(func: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            seen.append(threading.get_ident())
            entered.set()
            # Deadlocks (and fails) if this runs on the loop's thread, since
            # only the loop sets ``release``.
            assert release.wait(5), "the event loop was blocked"
            return func(*args)

        return wrapper

    monkeypatch.setattr(_fs, "local_put", gated(_fs.local_put))
    monkeypatch.setattr(_fs, "local_get", gated(_fs.local_get))
    results: list[bytes] = []

    async def release_when_entered() -> None:
        # Waits in another thread, so this task only needs a free event loop.
        assert await anyio.to_thread.run_sync(entered.wait, 5)
        entered.clear()
        release.set()

    async with FsspecArtifactStore(str(tmp_path)) as store:
        async with anyio.create_task_group() as tg:
            tg.start_soon(release_when_entered)
            ref = await store.put(b"threaded")
        release.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(release_when_entered)
            results.append(await store.get(ref))
    assert results == [b"threaded"]
    assert len(seen) == 2
    assert loop_thread not in seen


# -- lifecycle -----------------------------------------------------------------


@pytest.mark.anyio
async def test_aclose_is_idempotent_and_final(memory_url: str) -> None:
    store = await open_artifacts(memory_url)
    ref = await store.put(b"x")
    await store.aclose()
    await store.aclose()
    with pytest.raises(StorageError, match="closed"):
        await store.get(ref)
    with pytest.raises(StorageError, match="closed"):
        await store.put(b"x")
    with pytest.raises(StorageError, match="closed"):
        await store.open()


def test_empty_url_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        FsspecArtifactStore("")


# -- configuration errors ------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_protocol_is_a_configuration_error() -> None:
    store = FsspecArtifactStore("nosuchproto://user:hunter2@host/bucket")
    with pytest.raises(ConfigurationError, match="unknown protocol") as info:
        await store.open()
    assert "hunter2" not in str(info.value)
    assert "nosuchproto://user:***@host/bucket" in str(info.value)


@pytest.mark.anyio
async def test_missing_implementation_carries_the_install_hint() -> None:
    _register(
        "kitarumissing",
        "kitaru_no_such_module.NoSuchFileSystem",
        errtxt="Install kitaru-no-such-module to access kitarumissing",
    )
    with pytest.raises(ConfigurationError, match="Install kitaru-no-such-module"):
        await open_artifacts("kitarumissing://bucket/prefix")


@pytest.mark.anyio
@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
async def test_missing_s3fs_suggests_the_kitaru_extra() -> None:
    with pytest.raises(ConfigurationError, match=r"kitaru\[s3\]") as info:
        await open_artifacts("s3://bucket/prefix")
    assert "s3fs" in str(info.value)


# -- async filesystems ---------------------------------------------------------


class _Session:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


@functools.cache
def _dict_async_fs() -> Any:
    """A minimal async filesystem standing in for s3fs and friends (built lazily)."""
    from fsspec.asyn import AsyncFileSystem  # type: ignore[import-untyped]

    class DictAsyncFileSystem(AsyncFileSystem):  # type: ignore[misc]
        protocol = "kitarutestasync"
        blobs: ClassVar[dict[str, bytes]] = {}
        threads: ClassVar[list[tuple[str, int]]] = []
        sessions: ClassVar[list[_Session]] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._session: _Session | None = None

        def _record(self, name: str) -> None:
            self.threads.append((name, threading.get_ident()))

        async def set_session(self) -> _Session:
            if self._session is None:
                self._session = _Session()
                self.sessions.append(self._session)
            return self._session

        async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
            self._record("info")
            path = self._strip_protocol(path)
            if path not in self.blobs:
                raise FileNotFoundError(path)
            return {"name": path, "size": len(self.blobs[path]), "type": "file"}

        async def _pipe_file(
            self, path: str, value: bytes, mode: str = "overwrite", **kw: Any
        ) -> None:
            self._record("pipe")
            self.blobs[self._strip_protocol(path)] = bytes(value)

        async def _cat_file(
            self, path: str, start: int | None = None, end: int | None = None, **kw: Any
        ) -> bytes:
            self._record("cat")
            path = self._strip_protocol(path)
            if path not in self.blobs:
                raise FileNotFoundError(path)
            return self.blobs[path]

    return DictAsyncFileSystem


@pytest.fixture
def async_fs() -> Iterator[Any]:
    cls = _dict_async_fs()
    _register(cls.protocol, cls)
    yield cls
    cls.blobs.clear()
    cls.threads.clear()
    cls.sessions.clear()


@pytest.mark.anyio
async def test_async_filesystem_runs_on_the_loop(async_fs: Any) -> None:
    loop_thread = threading.get_ident()
    async with FsspecArtifactStore("kitarutestasync://bucket/prefix") as store:
        ref = await store.put(b"async")
        assert await store.put(b"async") == ref
        assert await store.get(ref) == b"async"
        with pytest.raises(ArtifactUnreadable, match="not found"):
            await store.get(f"sha256:{_hex(b'absent')}")
    digest = _hex(b"async")
    assert async_fs.blobs == {f"bucket/prefix/{digest[:2]}/{digest[2:]}": b"async"}
    names = [name for name, _ in async_fs.threads]
    assert names.count("pipe") == 1
    assert {thread for _, thread in async_fs.threads} == {loop_thread}
    [session] = async_fs.sessions
    assert session.closed


@pytest.mark.anyio
async def test_async_filesystem_errors_are_wrapped(
    async_fs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_pipe(self: Any, path: str, value: bytes, **kw: Any) -> None:
        raise PermissionError("AccessDenied")

    monkeypatch.setattr(async_fs, "_pipe_file", failing_pipe)
    async with FsspecArtifactStore("kitarutestasync://user:hunter2@bucket/p") as store:
        with pytest.raises(StorageError, match="AccessDenied") as info:
            await store.put(b"denied")
    assert isinstance(info.value.__cause__, PermissionError)
    assert "hunter2" not in str(info.value)


@pytest.mark.anyio
async def test_async_filesystem_off_asyncio_runs_in_threads(
    async_fs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Off asyncio (trio), fsspec's async filesystems are built in sync mode and
    # called from worker threads; pretend we are not on asyncio.
    monkeypatch.setattr(artifact_store, "_on_asyncio", lambda: False)
    loop_thread = threading.get_ident()
    async with FsspecArtifactStore("kitarutestasync://bucket/sync") as store:
        ref = await store.put(b"sync mode")
        assert await store.put(b"sync mode") == ref
        assert await store.get(ref) == b"sync mode"
    names = [name for name, _ in async_fs.threads]
    assert names.count("pipe") == 1
    # fsspec runs the coroutines on its own IO thread, never on ours.
    assert loop_thread not in {thread for _, thread in async_fs.threads}
    assert async_fs.sessions == []


@pytest.mark.skipif(not HAS_TRIO, reason="trio is not installed")
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_stores_work_under_trio(async_fs: Any, memory_url: str) -> None:
    try:
        await anyio.to_thread.run_sync(lambda: None)
    except TypeError:  # pragma: no cover - depends on the installed trio
        pytest.skip("the installed trio is too old for this anyio")
    async with FsspecArtifactStore("kitarutestasync://bucket/trio") as store:
        ref = await store.put(b"trio")
        assert await store.get(ref) == b"trio"
    async with FsspecArtifactStore(memory_url) as store:
        ref = await store.put(b"trio memory")
        assert await store.get(ref) == b"trio memory"
