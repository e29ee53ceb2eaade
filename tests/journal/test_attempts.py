"""A retried checkpoint records what its successful attempt logged and saved, not a failed one's."""

from __future__ import annotations

import pytest

import kitaru
from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

tries: list[int] = []


@checkpoint(retries=1, backoff=0)
async def flaky() -> str:
    tries.append(len(tries))
    if len(tries) == 1:
        kitaru.log(stage="first attempt")
        await kitaru.save("draft", "from the attempt that failed")
        raise RuntimeError("first attempt fails")
    kitaru.log(stage="second attempt")
    return "ok"


@flow
async def retried() -> str:
    return await flaky()


async def test_a_failed_attempts_metadata_and_artifacts_are_not_kept(
    make_runtime: RuntimeFactory,
) -> None:
    tries.clear()
    async with make_runtime(flows=[retried]) as rt:
        run = await rt.start(retried)
        assert await run.result() == "ok"
        info = await rt.get_run(run.id)
        (entry,) = info.checkpoints
        assert entry.attempts == 2
        assert entry.metadata == {"stage": "second attempt"}
        assert entry.errors == ["RuntimeError: first attempt fails"]
        assert info.artifacts == {}
        with pytest.raises(kitaru.ArtifactNotFound):
            await kitaru.load(run.id, "draft")
