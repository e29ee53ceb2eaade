"""The artifact store on S3, against a real local S3-compatible server (moto).

The ``s3`` fixture (``tests/storage/conftest.py``) gives each test its own
prefix in a bucket of a moto server running in a subprocess; the helpers on
it read and write the bucket through boto3, behind the store's back. The
end-to-end tests run flows whose checkpoint values go to the bucket and are
read back by a fresh runtime; they also run on a ``file://`` URL (``memory://``
is covered in ``tests/journal/test_values.py``).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import kitaru
from kitaru import ArtifactUnreadable, ConfigurationError, StorageError, checkpoint, flow
from kitaru.storage.artifacts import FsspecArtifactStore, open_artifacts
from kitaru.storage.artifacts import _store as artifact_store
from kitaru.storage.artifacts._options import split_options
from kitaru.testing import always_evict
from tests.storage._s3_server import S3Prefix

pytestmark = pytest.mark.anyio


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dead_endpoint() -> str:
    """An address on the loopback where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _count_s3_puts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every object write s3fs makes (the path of each)."""
    import s3fs  # type: ignore[import-untyped]

    writes: list[str] = []
    real = s3fs.S3FileSystem._pipe_file

    async def counting(self: Any, path: str, data: bytes, *args: Any, **kwargs: Any) -> Any:
        writes.append(path)
        return await real(self, path, data, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", counting)
    return writes


# -- the store on S3 -----------------------------------------------------------


async def test_put_get_round_trip(s3: S3Prefix) -> None:
    data = b"hello object store"
    async with FsspecArtifactStore(s3.url) as store:
        ref = await store.put(data)
        assert ref == f"sha256:{_hex(data)}"
        assert await store.get(ref) == data
        empty = await store.put(b"")
        assert await store.get(empty) == b""


async def test_large_value_round_trips(s3: S3Prefix) -> None:
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB: hashed in a thread
    async with FsspecArtifactStore(s3.url) as store:
        ref = await store.put(data)
        assert await store.get(ref) == data
    assert await s3.read(s3.key(_hex(data))) == data


async def test_content_is_stored_once_under_its_hash(
    s3: S3Prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _count_s3_puts(monkeypatch)
    async with FsspecArtifactStore(s3.url) as store:
        first = await store.put(b"same bytes")
        assert await store.put(b"same bytes") == first
        other = await store.put(b"other bytes")
    # A second store (another process, or after a restart) finds the object.
    async with FsspecArtifactStore(s3.url) as store:
        assert await store.put(b"same bytes") == first
    assert other != first
    assert first == f"sha256:{_hex(b'same bytes')}"
    expected = sorted([s3.key(_hex(b"same bytes")), s3.key(_hex(b"other bytes"))])
    assert await s3.keys() == expected
    assert await s3.read(s3.key(_hex(b"same bytes"))) == b"same bytes"
    assert len(writes) == 2  # one PUT per distinct content, none for repeats


async def test_concurrent_puts_of_the_same_content_write_once(
    s3: S3Prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _count_s3_puts(monkeypatch)
    data = b"shared" * 50_000
    refs: list[str] = []
    async with FsspecArtifactStore(s3.url) as store:

        async def put() -> None:
            refs.append(await store.put(data))

        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(put)
        assert refs == [f"sha256:{_hex(data)}"] * 30
        assert await store.get(refs[0]) == data
    assert await s3.keys() == [s3.key(_hex(data))]
    assert len(writes) == 1


async def test_concurrent_puts_from_two_stores_leave_one_object(s3: S3Prefix) -> None:
    # Two stores stand for two worker processes: neither knows of the other's
    # write, and object stores make a PUT visible only once complete.
    values = [f"value {i}".encode() * 1000 for i in range(10)]
    async with FsspecArtifactStore(s3.url) as one, FsspecArtifactStore(s3.url) as two:
        async with anyio.create_task_group() as tg:
            for value in values * 2:
                tg.start_soon(one.put, value)
                tg.start_soon(two.put, value)
        for value in values:
            assert await two.get(f"sha256:{_hex(value)}") == value
    assert await s3.keys() == sorted(s3.key(_hex(v)) for v in values)


async def test_corrupted_object_is_detected_on_read(s3: S3Prefix) -> None:
    async with FsspecArtifactStore(s3.url) as store:
        ref = await store.put(b"precious bytes")
        key = s3.key(_hex(b"precious bytes"))
        await s3.write(key, b"precious BYTES")
        with pytest.raises(ArtifactUnreadable, match="corrupted") as info:
            await store.get(ref)
    message = str(info.value)
    assert ref in message
    assert s3.url in message
    assert key in message  # which object to restore or delete


async def test_truncated_object_is_rewritten_by_put(s3: S3Prefix) -> None:
    data = b"complete content"
    await s3.write(s3.key(_hex(data)), data[:5])
    async with FsspecArtifactStore(s3.url) as store:
        ref = await store.put(data)
        assert await store.get(ref) == data
    assert await s3.read(s3.key(_hex(data))) == data


async def test_missing_ref_is_a_clear_error(s3: S3Prefix) -> None:
    ref = f"sha256:{_hex(b'never stored')}"
    async with FsspecArtifactStore(s3.url) as store:
        with pytest.raises(ArtifactUnreadable, match="not found") as info:
            await store.get(ref)
        with pytest.raises(StorageError, match="malformed artifact ref"):
            await store.get("sha256:../../secrets")
    assert ref in str(info.value)
    assert s3.url in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


async def test_open_artifacts_on_s3(s3: S3Prefix) -> None:
    store = await open_artifacts(s3.url)
    try:
        ref = await store.put(b"opened")
        assert await store.get(ref) == b"opened"
    finally:
        await store.aclose()
    with pytest.raises(StorageError, match="closed"):
        await store.get(ref)


async def test_off_asyncio_the_s3_filesystem_runs_in_threads(
    s3: S3Prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On trio, s3fs is built in sync mode and called from worker threads;
    # pretend we are not on asyncio.
    monkeypatch.setattr(artifact_store, "_on_asyncio", lambda: False)
    async with FsspecArtifactStore(s3.url) as store:
        ref = await store.put(b"threaded s3")
        assert await store.put(b"threaded s3") == ref
        assert await store.get(ref) == b"threaded s3"
    assert await s3.keys() == [s3.key(_hex(b"threaded s3"))]
    bucketless = f"s3://no-such-bucket/p?endpoint_url={s3.server.endpoint}"
    async with FsspecArtifactStore(bucketless) as store:
        with pytest.raises(StorageError, match="bucket does not exist"):
            await store.put(b"x")
    assert "no-such-bucket" not in await s3.buckets()


# -- pointing at the server: URL options and the environment --------------------


async def test_endpoint_from_the_environment(s3: S3Prefix, monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore reads AWS_ENDPOINT_URL_S3 (and AWS_ENDPOINT_URL) by itself.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.server.endpoint)
    url = f"s3://{s3.server.bucket}/{s3.prefix}"
    async with FsspecArtifactStore(url) as store:
        ref = await store.put(b"via the environment")
        assert await store.get(ref) == b"via the environment"
    assert await s3.keys() == [s3.key(_hex(b"via the environment"))]


async def test_generic_endpoint_variable_works_too(
    s3: S3Prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.server.endpoint)
    async with FsspecArtifactStore(f"s3://{s3.server.bucket}/{s3.prefix}") as store:
        ref = await store.put(b"generic")
        assert await store.get(ref) == b"generic"


async def test_endpoint_in_the_url_wins_over_the_environment(
    s3: S3Prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", _dead_endpoint())
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    async with FsspecArtifactStore(s3.url) as store:
        ref = await store.put(b"url wins")
        assert await store.get(ref) == b"url wins"


async def test_more_options_in_the_url(s3: S3Prefix) -> None:
    url = f"{s3.url}&region_name=eu-west-1&use_ssl=false&max_concurrency=4"
    async with FsspecArtifactStore(url) as store:
        ref = await store.put(b"options")
        assert await store.get(ref) == b"options"
    assert await s3.keys() == [s3.key(_hex(b"options"))]


def test_url_options_are_parsed() -> None:
    url = (
        "s3://bucket/some/prefix?endpoint_url=http://127.0.0.1:9000"
        "&use_ssl=false&anon=true&max_concurrency=4&region_name=eu-west-1"
        '&config_kwargs={"retries":{"max_attempts":2}}'
    )
    assert split_options(url) == (
        "s3://bucket/some/prefix",
        {
            "endpoint_url": "http://127.0.0.1:9000",
            "use_ssl": False,
            "anon": True,
            "max_concurrency": 4,
            "client_kwargs": {"region_name": "eu-west-1"},
            "config_kwargs": {"retries": {"max_attempts": 2}},
        },
    )
    chained = "simplecache::s3://bucket/p?endpoint_url=http://h:9000"
    assert split_options(chained) == (
        "simplecache::s3://bucket/p",
        {"endpoint_url": "http://h:9000"},
    )
    # Paths, file:// and memory:// URLs keep a "?" as part of the path.
    for plain in ("folder/a?b=1", "file:///tmp/a?b=1", "memory://x?y=1", "s3://bucket/p"):
        assert split_options(plain) == (plain, {})


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("secret=hunter2", "secret"),
        ("key=AKIAHUNTER2", "key"),
        ("token=hunter2", "token"),
        ("password=hunter2", "password"),
        ("aws_secret_access_key=hunter2", "aws_secret_access_key"),
        ('client_kwargs={"aws_session_token":"hunter2"}', "client_kwargs.aws_session_token"),
    ],
)
def test_credentials_in_the_url_are_refused_and_never_shown(query: str, shown: str) -> None:
    url = f"s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&{query}"
    with pytest.raises(ConfigurationError, match="credential") as info:
        FsspecArtifactStore(url)
    message = str(info.value)
    assert "hunter2" not in message
    assert repr(shown) in message
    assert "AWS_ACCESS_KEY_ID" in message  # what to do instead
    assert "endpoint_url=http://127.0.0.1:9000" in message


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("endpoint_url=a&endpoint_url=b", "twice"),
        ("asynchronous=false", "kitaru sets itself"),
        ("config_kwargs={not json", "not valid JSON"),
        ("novalue", "malformed query"),
    ],
)
def test_bad_url_options_are_configuration_errors(query: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        FsspecArtifactStore(f"s3://bucket/prefix?{query}")


async def test_unknown_option_is_a_configuration_error(s3: S3Prefix) -> None:
    with pytest.raises(ConfigurationError, match="'endpoint'") as info:
        await open_artifacts(f"s3://{s3.server.bucket}/{s3.prefix}?endpoint=http://x:1")
    assert f"s3://{s3.server.bucket}/{s3.prefix}" in str(info.value)
    assert "keyword argument of the fsspec filesystem" in str(info.value)


# -- failures of the object store ----------------------------------------------


async def test_missing_bucket_says_to_create_it(s3: S3Prefix) -> None:
    url = f"s3://no-such-bucket/prefix?endpoint_url={s3.server.endpoint}"
    ref = f"sha256:{_hex(b'x')}"
    async with FsspecArtifactStore(url) as store:
        with pytest.raises(StorageError, match="bucket does not exist") as put_info:
            await store.put(b"x")
        with pytest.raises(StorageError, match="bucket does not exist") as get_info:
            await store.get(ref)
    for info in (put_info, get_info):
        message = str(info.value)
        assert url in message
        assert "create it" in message
        assert "Traceback" not in message
    assert ref in str(get_info.value)
    assert "no-such-bucket" not in await s3.buckets()  # kitaru creates no bucket


async def test_unreachable_endpoint_is_a_storage_error(
    s3: S3Prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore retries 5 times by default
    dead = _dead_endpoint()
    url = f"s3://{s3.server.bucket}/prefix?endpoint_url={dead}"
    started = time.monotonic()
    async with FsspecArtifactStore(url) as store:
        with pytest.raises(StorageError, match="did not answer") as put_info:
            await store.put(b"x")
        with pytest.raises(StorageError, match="did not answer") as get_info:
            await store.get(f"sha256:{_hex(b'x')}")
    assert time.monotonic() - started < 20
    for info in (put_info, get_info):
        message = str(info.value)
        assert url in message
        assert "endpoint_url" in message and "AWS_ENDPOINT_URL" in message
        assert "Traceback" not in message


async def test_passwords_in_the_endpoint_are_masked(
    s3: S3Prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs  # type: ignore[import-untyped]

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # s3fs's own retries
    dead = _dead_endpoint().replace("http://", "http://admin:hunter2@")
    store = FsspecArtifactStore(f"s3://{s3.server.bucket}/p?endpoint_url={dead}")
    assert "hunter2" not in repr(store)
    async with store:
        with pytest.raises(StorageError) as info:
            await store.put(b"x")
    assert "hunter2" not in str(info.value)
    assert "admin:***@" in str(info.value)


# -- end to end: a runtime whose large values live in the artifact store --------


@dataclass(frozen=True)
class _Target:
    """Where a test's artifacts live, and how to look at them directly."""

    url: str
    s3: S3Prefix | None = None
    folder: Path | None = None

    async def keys(self) -> list[str]:
        if self.s3 is not None:
            return await self.s3.keys()
        assert self.folder is not None
        return sorted(
            p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file()
        )

    def key(self, digest: str) -> str:
        return self.s3.key(digest) if self.s3 is not None else f"{digest[:2]}/{digest[2:]}"

    async def read(self, key: str) -> bytes:
        if self.s3 is not None:
            return await self.s3.read(key)
        assert self.folder is not None
        return (self.folder / key).read_bytes()

    async def delete(self, key: str) -> None:
        if self.s3 is not None:
            await self.s3.delete(key)
        else:
            assert self.folder is not None
            (self.folder / key).unlink()

    async def write(self, key: str, data: bytes) -> None:
        if self.s3 is not None:
            await self.s3.write(key, data)
        else:
            assert self.folder is not None
            (self.folder / key).write_bytes(data)


@pytest.fixture(params=["s3", "file-url"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> _Target:
    if request.param == "s3":
        s3: S3Prefix = request.getfixturevalue("s3")
        return _Target(s3.url, s3=s3)
    folder = tmp_path / "artifacts"
    return _Target(folder.as_uri(), folder=folder)


SIZE = 20_000  # characters; the runtime's threshold is 1 KiB
produced: list[int] = []


def _big_value(n: int) -> str:
    return "".join(f"{i:08d}" for i in range(n // 8))


@checkpoint
def produce(n: int) -> str:
    produced.append(n)
    return _big_value(n)


@checkpoint
def small(n: int) -> int:
    return n + 1


@flow(name="s3-e2e")
async def big_flow(n: int) -> str:
    value = await produce(n)
    await small(n)
    approved = await kitaru.wait(schema=bool, question="keep it?")
    return value if approved else ""


def _runtime(tmp_path: Path, artifacts: str, **settings: Any) -> kitaru.Runtime:
    return kitaru.runtime(
        store=f"sqlite:///{tmp_path / 'kitaru.db'}",
        artifacts=artifacts,
        inline_threshold=1024,
        flows=[big_flow],
        **always_evict(),
        **settings,
    )


async def _until_waiting(rt: kitaru.Runtime, run_id: str) -> kitaru.RunInfo:
    with anyio.fail_after(10):
        while (info := await rt.get_run(run_id)).status != "waiting":
            assert info.status in ("pending", "running"), info
            await anyio.sleep(0.01)
    return info


async def test_large_checkpoint_values_land_in_the_store_and_replay_from_it(
    target: _Target, tmp_path: Path
) -> None:
    produced.clear()
    value = _big_value(SIZE)
    async with _runtime(tmp_path, target.url) as rt:
        await rt.start(big_flow, SIZE, run_id="big")
        info = await _until_waiting(rt, "big")
    big, little = info.checkpoints[0], info.checkpoints[1]
    assert (big.name, little.name) == ("produce", "small")
    assert big.artifact is not None and little.artifact is None  # small values stay inline
    digest = big.artifact.removeprefix("sha256:")
    [key] = await target.keys()
    assert key == target.key(digest)
    stored = await target.read(key)
    assert _hex(stored) == digest  # content-addressed
    assert json.loads(stored) == value
    assert produced == [SIZE]

    # A fresh runtime (a restart, or another worker) rehydrates the evicted
    # run: the checkpoint is not run again, its value comes from the store.
    async with _runtime(tmp_path, target.url) as rt:
        await rt.send("big", True)
        with anyio.fail_after(10):
            assert await rt.result("big") == value
    assert produced == [SIZE]
    # The output equals the checkpoint's value: same bytes, same object.
    assert await target.keys() == [key]

    async with _runtime(tmp_path, target.url) as rt:
        assert await rt.result("big") == value  # the output, read from the store
        info = await rt.get_run("big")
    assert info.status == "completed"


async def test_a_lost_artifact_fails_the_run_until_it_is_restored(
    target: _Target, tmp_path: Path
) -> None:
    produced.clear()
    async with _runtime(tmp_path, target.url) as rt:
        await rt.start(big_flow, SIZE, run_id="lost")
        info = await _until_waiting(rt, "lost")
    ref = info.checkpoints[0].artifact
    assert ref is not None
    key = target.key(ref.removeprefix("sha256:"))
    stored = await target.read(key)
    await target.delete(key)

    # The replay cannot read the checkpoint's value: the run fails with an
    # error that names the ref (the data's fault, so no restart loop), and the
    # checkpoint is not silently run again.
    async with _runtime(tmp_path, target.url) as rt:
        await rt.send("lost", True)
        with anyio.fail_after(10), pytest.raises(kitaru.FlowFailed) as failed:
            await rt.result("lost")
        assert failed.value.error_type == "kitaru.ArtifactUnreadable"
        assert ref in failed.value.error and "not found" in failed.value.error
        assert rt.supervisor.restarts == 0
    assert produced == [SIZE]

    # Once the object is back, a retry resumes the run where it was.
    await target.write(key, stored)
    async with _runtime(tmp_path, target.url) as rt:
        await rt.retry("lost")
        with anyio.fail_after(10):
            assert await rt.result("lost") == _big_value(SIZE)
    assert produced == [SIZE]
