"""A run whose recorded value's artifact is gone fails, naming it; retry resumes it later."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.testing import always_evict

pytestmark = pytest.mark.anyio

BIG = 2048  # above the runtime's inline threshold below: stored as an artifact


@checkpoint
async def big_value() -> str:
    return "x" * BIG


@flow
async def uses_a_big_value() -> int:
    text = await big_value()
    await kitaru.wait(str)
    return len(text)


async def test_a_missing_artifact_fails_the_run_and_retry_resumes_it(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    settings = {
        "store": f"sqlite:///{tmp_path}/k.db",
        "artifacts": str(artifacts),
        "inline_threshold": 1024,
        "restart_backoff": 0.01,
        **always_evict(),
    }
    async with kitaru.runtime(flows=[uses_a_big_value], **settings) as rt:
        run = await rt.start(uses_a_big_value)
        with anyio.fail_after(10):
            while (await rt.get_run(run.id)).status != "waiting" or rt.is_live(run.id):
                await anyio.sleep(0.01)
        saved = tmp_path / "saved"
        shutil.move(artifacts, saved)
        await rt.send(run.id, "go on")  # rehydrates: the replay needs the artifact
        with anyio.fail_after(10), pytest.raises(kitaru.FlowFailed) as failed:
            await run.result()
        assert failed.value.error_type == "kitaru.ArtifactUnreadable"
        assert "not found in artifact store" in failed.value.error
        assert rt.supervisor.restarts == 0  # the data's fault: not restarted forever
        shutil.move(saved, artifacts)
        await rt.retry(run.id)
        with anyio.fail_after(10):
            assert await run.result() == BIG
