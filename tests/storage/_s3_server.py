"""A local S3-compatible server for tests: moto in server mode, as a real subprocess.

:func:`run_s3_server` starts ``python -m moto.server`` on 127.0.0.1 on a free
port, waits until it answers, creates a bucket and yields an :class:`S3Server`;
it stops the process on exit. The fixtures in ``tests/storage/conftest.py``
wrap it; tests reach it only through those fixtures.

Nothing here touches the real AWS: the endpoint is always the local server,
and the credentials are dummies.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

__all__ = ("DUMMY_CREDENTIALS", "S3Prefix", "S3Server", "missing_packages", "run_s3_server")

#: Credentials moto accepts; set in the environment of each S3 test only.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "kitaru-test",
    "AWS_SECRET_ACCESS_KEY": "kitaru-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_PACKAGES = {"s3fs": "s3fs", "moto": "moto[server]", "boto3": "boto3", "flask": "moto[server]"}
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


def missing_packages() -> list[str]:
    """The pip requirements for the S3 tests that are not installed."""
    missing = {req for mod, req in _PACKAGES.items() if importlib.util.find_spec(mod) is None}
    return sorted(missing)


@dataclass(frozen=True)
class S3Server:
    """A running local S3 server and one bucket on it."""

    endpoint: str
    bucket: str
    #: A boto3 S3 client with the dummy credentials, for looking behind the store.
    client: Any


@dataclass(frozen=True)
class S3Prefix:
    """One test's folder in the bucket, and direct access to its objects.

    The helpers go through boto3 in a worker thread, not through the store
    under test, so they see what really is in the bucket.
    """

    server: S3Server
    prefix: str

    @property
    def url(self) -> str:
        """The artifact store URL of this prefix, endpoint included."""
        return f"s3://{self.server.bucket}/{self.prefix}?endpoint_url={self.server.endpoint}"

    def key(self, digest: str) -> str:
        """The object key where the store keeps the blob of ``digest``."""
        return f"{self.prefix}/{digest[:2]}/{digest[2:]}"

    async def keys(self) -> list[str]:
        """Every object key under this prefix, sorted."""
        return await anyio.to_thread.run_sync(self._keys)

    def _keys(self) -> list[str]:
        pages = self.server.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.server.bucket, Prefix=f"{self.prefix}/"
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    async def read(self, key: str) -> bytes:
        """The bytes of object ``key``."""

        def read() -> bytes:
            response = self.server.client.get_object(Bucket=self.server.bucket, Key=key)
            body: bytes = response["Body"].read()
            return body

        return await anyio.to_thread.run_sync(read)

    async def write(self, key: str, data: bytes) -> None:
        """Overwrite object ``key`` behind the store's back."""
        await anyio.to_thread.run_sync(
            functools.partial(
                self.server.client.put_object, Bucket=self.server.bucket, Key=key, Body=data
            )
        )

    async def delete(self, key: str) -> None:
        """Delete object ``key`` behind the store's back."""
        await anyio.to_thread.run_sync(
            functools.partial(self.server.client.delete_object, Bucket=self.server.bucket, Key=key)
        )

    async def buckets(self) -> list[str]:
        """The names of the buckets on the server."""

        def names() -> list[str]:
            return sorted(b["Name"] for b in self.server.client.list_buckets()["Buckets"])

        return await anyio.to_thread.run_sync(names)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(endpoint: str) -> bool:
    # No proxy: the server is on the loopback address.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{endpoint}/moto-api/", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(_STOP_TIMEOUT)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto on a free port; retry a few times if another process took the port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DUMMY_CREDENTIALS)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for _ in range(3):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(endpoint):
                return process, endpoint
            time.sleep(0.1)
        _stop(process)
    raise RuntimeError(f"moto's S3 server did not start; its output ends with:\n{_tail(log)}")


@contextmanager
def run_s3_server(log: Path, bucket: str = "kitaru-test") -> Iterator[S3Server]:
    """Run a local S3 server with ``bucket`` created; stop it on exit.

    Raises:
        RuntimeError: the server did not answer within 30 seconds.
    """
    import boto3  # type: ignore[import-untyped]

    process, endpoint = _start(log)
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=bucket)
        yield S3Server(endpoint=endpoint, bucket=bucket, client=client)
        client.close()
    finally:
        _stop(process)
