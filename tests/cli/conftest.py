"""Fixtures of the CLI tests; the helpers live in ``support.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """An empty store in this test's folder."""
    return Cli(tmp_path)
