"""`import kitaru` stays light: no LLM client, database driver or web framework."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "litellm",
    "asyncpg",
    "fastapi",
    "pydantic_ai",
    "uvicorn",
    "aiosqlite",
    "fsspec",
    "kitaru._llm",  # loaded by the first use of kitaru.llm
    "kitaru.storage.artifacts._store",  # loaded when a large value is first stored
    "kitaru.storage.sqlite",  # loaded when a SQLite store opens
    "kitaru.storage.postgres",  # loaded when a PostgreSQL store opens
)


def test_import_kitaru_does_not_import_heavy_modules() -> None:
    code = (
        "import sys, kitaru\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
