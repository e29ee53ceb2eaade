"""Helpers for tests against the PostgreSQL server named by ``KITARU_TEST_POSTGRES_URL``.

Each test gets its own schema (``?schema=kt_<random>``), dropped afterwards.
Schema housekeeping runs on a private event loop in a worker thread, so sync
fixtures can do it whatever loop the test itself runs on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio

from kitaru.storage.postgres._url import parse_url, quote_ident

__all__ = (
    "ENV",
    "SKIP_REASON",
    "admin",
    "while_locked",
    "drop_schema",
    "probe",
    "run_sync",
    "schema_url",
    "server_url",
    "with_password",
)

T = TypeVar("T")

ENV = "KITARU_TEST_POSTGRES_URL"
SKIP_REASON = f"set {ENV}=postgresql://... to run PostgreSQL tests"


def server_url() -> str | None:
    """The configured server URL, or ``None``."""
    return os.environ.get(ENV) or None


def in_ci() -> bool:
    """Whether this is a CI run (an unreachable server then fails instead of skipping)."""
    return os.environ.get("CI", "").lower() == "true"


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` to completion on a fresh event loop in a worker thread."""

    async def main() -> T:
        return await make()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def admin(base: str) -> Any:
    """A plain asyncpg connection to the test server (close it yourself)."""
    import asyncpg

    return await asyncpg.connect(parse_url(base).dsn, timeout=5)


async def while_locked(
    base: str, schema: str, run_id: str, seconds: float, op: Callable[[], Awaitable[T]]
) -> T:
    """Run ``op`` while another connection holds ``run_id``'s row lock for ``seconds``."""
    conn = await admin(base)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(
            f"SELECT 1 FROM {quote_ident(schema)}.runs WHERE id = $1 FOR UPDATE", run_id
        )
        result: list[T] = []

        async def unlock_later() -> None:
            await anyio.sleep(seconds)
            await transaction.rollback()

        async with anyio.create_task_group() as tg:
            tg.start_soon(unlock_later)
            with anyio.fail_after(seconds + 20):
                result.append(await op())
        return result[0]
    finally:
        await conn.close()


def probe(base: str) -> str | None:
    """``None`` if the server answers, else why not."""

    async def check() -> None:
        conn = await admin(base)
        await conn.close()

    try:
        run_sync(check)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        secret = parse_url(base).secret
        return text.replace(secret, "***") if secret else text
    return None


def schema_url(base: str, schema: str | None = None, **params: object) -> str:
    """``base`` with ``schema`` (a fresh random one by default) and ``params`` added."""
    schema = schema or f"kt_{uuid.uuid4().hex[:12]}"
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **params}.items())
    return f"{base}{'&' if '?' in base else '?'}{query}"


def with_password(url: str, password: str, database: str | None = None) -> str:
    """``url`` logging in with ``password`` (and to ``database``, if given)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or 'postgres'}:{password}@{host}"
    path = f"/{database}" if database is not None else parts.path
    return parts._replace(netloc=netloc, path=path).geturl()


def drop_schema(base: str, schema: str) -> None:
    """Drop ``schema`` and everything in it, if it exists."""

    async def drop() -> None:
        conn = await admin(base)
        try:
            await conn.execute("SET lock_timeout = '10s'")
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        finally:
            await conn.close()

    run_sync(drop)
