"""Fixtures of the storage suite: one open, empty run store per backend.

The backends come from ``store_url`` in ``tests/conftest.py``: memory, a
SQLite file under ``tmp_path``, and PostgreSQL (a fresh schema on the server
named by ``KITARU_TEST_POSTGRES_URL``; skipped when it is unset).
``anyio_backend`` comes from there as well.

``s3_server`` runs a local S3-compatible server (moto, in a subprocess) for
the session; ``s3`` gives a test its own prefix in that server's bucket, with
dummy AWS credentials in the environment for that test only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kitaru.storage import RunStore, open_store
from tests.storage._s3_server import (
    DUMMY_CREDENTIALS,
    S3Prefix,
    S3Server,
    missing_packages,
    run_s3_server,
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[RunStore]:
    """An open run store on this test's fresh database; closed afterwards."""
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A local S3 server (moto) with one bucket, for the whole session.

    Skips when s3fs or moto[server] is missing, except under ``CI=true``,
    where the dev extra installs them and their absence is a failure.
    """
    missing = missing_packages()
    if missing:
        reason = f"the S3 tests need {', '.join(missing)} (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("s3-server") / "moto.log"
    with run_s3_server(log) as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Prefix:
    """This test's own prefix in the local bucket; dummy credentials for this test only.

    No AWS setting of the machine leaks in: profiles, endpoints and config
    files are cleared, and the instance metadata service is never asked.
    """
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return S3Prefix(s3_server, f"tests/{uuid.uuid4().hex}")
