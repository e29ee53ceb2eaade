"""A run whose process died in ``kitaru.sleep`` and is resumed after its deadline wakes at once."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import kitaru
from kitaru import flow
from kitaru.testing import always_evict

pytestmark = pytest.mark.anyio


@flow
async def naps() -> str:
    await kitaru.sleep(0.2)
    return "rested"


def dead_owner() -> str:
    """A lease-owner id of this host whose process is gone (it exited)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    host = socket.gethostname().replace("/", "_")
    return f"{host}/{done.stdout.strip()}/deadbeef"


async def test_an_overdue_sleep_of_a_dead_process_fires_when_its_flow_is_hosted(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path}/k.db"
    async with kitaru.runtime(store=store, artifacts=str(tmp_path / "a"), **always_evict()) as rt:
        run = await rt.start(naps)
        with anyio.fail_after(10):
            while (await rt.get_run(run.id)).status != "sleeping" or rt.is_live(run.id):
                await anyio.sleep(0.01)
        # As if its process had been killed holding the lease: a dead owner, a
        # lease far in the future, and a deadline that passes meanwhile.
        claimed = await rt.store.claim(
            run.id, dead_owner(), now=time.time(), lease_until=time.time() + 3600
        )
        assert claimed is not None
    await anyio.sleep(0.3)
    started = time.monotonic()
    async with kitaru.runtime(store=store, artifacts=str(tmp_path / "a"), flows=[naps]) as rt:
        with anyio.fail_after(10):
            assert await rt.result(run.id) == "rested"
    # The timer service's rescan is 5 s; a dead owner's overdue run must not wait for it.
    assert time.monotonic() - started < 2.0
