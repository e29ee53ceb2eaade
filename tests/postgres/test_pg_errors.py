"""Driver errors become StorageError, and a password never shows in errors or logs."""

from __future__ import annotations

import logging
import socket
import traceback

import pytest

from kitaru import StorageError
from kitaru.storage import RunRecord, open_store
from kitaru.storage.postgres import PostgresStore
from tests.postgres import _server as pg

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

SECRET = "Sup3r-S3cret-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def everything_shown(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """Message, full traceback (with chained causes) and every log line."""
    shown = "".join(traceback.format_exception(exc))
    return shown + "\n".join(r.getMessage() for r in caplog.records)


async def test_unreachable_server_is_retried_then_reported_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://kitaru:{SECRET}@127.0.0.1:{free_port()}/db?retry_for=0.3"
    with pytest.raises(StorageError, match="kept failing") as caught:
        await open_store(url)
    shown = everything_shown(caught.value, caplog)
    assert SECRET not in shown
    assert "kitaru:***@127.0.0.1" in str(caught.value)
    assert "retrying" in caplog.text  # the fault was logged, redacted too


async def test_a_missing_database_is_explained_without_the_password(
    postgres_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The password is in the URL (whether or not the server asks for one).
    url = pg.with_password(postgres_server, SECRET, database=f"no_such_db_{free_port()}")
    with pytest.raises(StorageError, match="does not exist") as caught:
        await open_store(url)
    assert SECRET not in everything_shown(caught.value, caplog)
    assert "createdb" in str(caught.value)


async def test_a_password_echoed_by_the_server_is_scrubbed(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Unknown query parameters go to the server as settings, and it quotes a
    # refused value back; here that value is the password.
    url = pg.with_password(postgres_url, SECRET)
    with pytest.raises(StorageError, match="work_mem") as caught:
        await open_store(f"{url}&work_mem={SECRET}")
    assert SECRET not in everything_shown(caught.value, caplog)
    assert caught.value.__cause__ is None  # the driver's own text would show it


async def test_a_value_the_server_refuses_is_a_storage_error(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        bad = RunRecord("r1", "f", "running", 1.0, 1.0, error="nul \x00 inside")
        with pytest.raises(StorageError, match="could not create a run"):
            await store.create_run(bad)
        assert await store.get_run("r1") is None


async def test_a_closed_store_refuses_calls(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    await store.aclose()
    with pytest.raises(StorageError, match="closed"):
        await store.get_run("r1")
    with pytest.raises(StorageError, match="closed"):
        await store.change_token()


async def test_an_unopened_store_says_how_to_open_it(postgres_url: str) -> None:
    with pytest.raises(StorageError, match="not open"):
        await PostgresStore(postgres_url).get_run("r1")


def test_unset_server_url_skips_with_instructions() -> None:
    assert "KITARU_TEST_POSTGRES_URL=postgresql://" in pg.SKIP_REASON
