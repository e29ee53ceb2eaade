"""kitaru.log, kitaru.save and kitaru.load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import kitaru
from kitaru import checkpoint, flow

pytestmark = pytest.mark.anyio


class Report(BaseModel):
    title: str
    pages: int


async def test_log_attaches_metadata_to_the_checkpoint_or_the_run(rt: kitaru.Runtime) -> None:
    @checkpoint
    async def fetch(url: str) -> int:
        kitaru.log(url=url, status=200)
        kitaru.log(status=201)  # a later value of a key wins
        return 3

    @checkpoint
    def parse(size: int) -> int:
        kitaru.log(parser="sync")
        return size * 2

    @flow
    async def crawl() -> int:
        kitaru.log(stage="start")
        size = await fetch("https://example.org")
        kitaru.log(stage="parsed", pages=size)
        return await parse(size)

    run = await rt.start(crawl)
    assert await run.result() == 6
    info = await run.info()
    assert info.checkpoints[0].metadata == {"url": "https://example.org", "status": 201}
    assert info.checkpoints[1].metadata == {"parser": "sync"}
    assert info.metadata == {"stage": "parsed", "pages": 3}


async def test_run_metadata_is_stored_before_a_wait(rt: kitaru.Runtime) -> None:
    @flow
    async def asks() -> str:
        kitaru.log(waiting_for="a human")
        return await kitaru.wait(str)

    run = await rt.start(asks)
    for _ in range(200):
        info = await rt.get_run(run.id)
        if info.status == "waiting":
            break
        await kitaru_sleep()
    assert info.metadata == {"waiting_for": "a human"}
    await rt.send(run.id, "ok")
    assert await run.result() == "ok"


async def kitaru_sleep() -> None:
    import anyio

    await anyio.sleep(0.01)


def test_log_refuses_bad_metadata_and_calls_outside_flows() -> None:
    with pytest.raises(kitaru.NotInFlow):
        kitaru.log(a=1)
    with pytest.raises(kitaru.SerializationError, match="reserved"):
        kitaru.log(errors=[1])


async def test_log_stores_other_values_as_text(rt: kitaru.Runtime) -> None:
    @flow
    async def logs() -> None:
        kitaru.log(when=complex(1, 2))

    run = await rt.start(logs)
    await run.result()
    assert (await run.info()).metadata == {"when": "(1+2j)"}


async def test_save_and_load_artifacts(rt: kitaru.Runtime) -> None:
    @checkpoint
    async def write() -> int:
        await kitaru.save("report", Report(title="inner", pages=1))
        return 1

    @checkpoint
    def write_sync() -> int:
        kitaru.save("notes", ["a", "b"])
        return 2

    @flow
    async def producer() -> str:
        await write()
        write_ref = await kitaru.save("summary", {"ok": True})
        await write_sync()
        await kitaru.save("report", Report(title="final", pages=9))
        return write_ref

    run = await rt.start(producer)
    ref = await run.result()
    assert ref.startswith("sha256:")
    info = await run.info()
    assert set(info.artifacts) == {"report", "summary", "notes"}
    assert info.artifacts["summary"] == ref
    assert await kitaru.load(run.id, "summary") == {"ok": True}
    assert await kitaru.load(run.id, "notes") == ["a", "b"]
    # Saved twice: the later value wins, decoded into the requested type.
    final = await kitaru.load(run.id, "report", schema=Report)
    assert final == Report(title="final", pages=9)
    with pytest.raises(kitaru.ArtifactNotFound, match="'missing'"):
        await kitaru.load(run.id, "missing")
    with pytest.raises(kitaru.RunNotFound):
        await kitaru.load("no-such-run", "summary")


async def test_a_saved_artifact_is_not_written_again_on_replay(
    rt: kitaru.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    puts: list[str] = []
    # Equal content gets an equal ref, so count the writes themselves.
    writes: list[bytes] = []
    artifacts = rt.artifacts()
    put = artifacts.put

    async def counting_put(data: bytes) -> str:
        writes.append(data)
        return await put(data)

    monkeypatch.setattr(artifacts, "put", counting_put)

    @flow
    async def saver() -> Any:
        ref = await kitaru.save("state", {"n": 1})
        puts.append(ref)
        return await kitaru.wait(int)

    run = await rt.start(saver)
    for _ in range(200):
        if (await rt.get_run(run.id)).status == "waiting":
            break
        await kitaru_sleep()
    await rt.send(run.id, 5)
    assert await run.result() == 5
    info = await run.info()
    assert [c.kind for c in info.checkpoints] == ["save", "wait"]
    assert len(set(puts)) == 1
    assert len(writes) == 1


async def test_save_and_load_in_a_sync_flow(rt: kitaru.Runtime) -> None:
    @flow
    def sync_saver(numbers: list[int]) -> str:
        ref: str = kitaru.save("numbers", numbers)
        return ref

    @flow
    def sync_loader(run_id: str) -> list[int]:
        loaded: list[int] = kitaru.load(run_id, "numbers", schema=list[int])
        return loaded

    first = await rt.start(sync_saver, [1, 2, 3])
    assert (await first.result()).startswith("sha256:")
    second = await rt.start(sync_loader, first.id)
    assert await second.result() == [1, 2, 3]


def test_save_outside_a_flow_is_refused() -> None:
    with pytest.raises(kitaru.NotInFlow):
        kitaru.save("x", 1)
    with pytest.raises(kitaru.NotInFlow):
        kitaru.load("run", "x")
