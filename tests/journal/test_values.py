"""Typed values round-trip through the journal; bad values fail clearly at their checkpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import anyio
import pydantic
import pytest
from typing_extensions import TypedDict

import kitaru
from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


class Model(pydantic.BaseModel):
    name: str
    tags: list[str]


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Movie(TypedDict):
    title: str
    year: int


WHEN = dt.datetime(2026, 11, 28, 12, 30, tzinfo=dt.UTC)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
BLOB = bytes(range(256))

calls: list[str] = []


@checkpoint
def c_str() -> str:
    calls.append("str")
    return "text"


@checkpoint
def c_num() -> float:
    return 1.5


@checkpoint
def c_int() -> int:
    return 42


@checkpoint
def c_dict() -> dict[str, list[int]]:
    return {"a": [1, 2]}


@checkpoint
def c_tuple() -> tuple[int, str]:
    return (1, "a")


@checkpoint
def c_model() -> Model:
    return Model(name="n", tags=["t"])


@checkpoint
def c_dataclass() -> Point:
    return Point(1, 2.5)


@checkpoint
def c_typeddict() -> Movie:
    return {"title": "Alien", "year": 1979}


@checkpoint
def c_datetime() -> dt.datetime:
    return WHEN


@checkpoint
def c_uuid() -> uuid.UUID:
    return ID


@checkpoint
def c_bytes() -> bytes:
    return BLOB


@checkpoint
def c_none() -> None:
    return None


@checkpoint
def c_untyped():  # type: ignore[no-untyped-def]
    return {"k": (1, 2)}


gate = anyio.Event()


@checkpoint
async def c_block() -> None:
    await gate.wait()


observed: list[list[Any]] = []


@flow(name="values")
async def values(block: bool) -> None:
    out = [
        await c_str(),
        await c_num(),
        await c_int(),
        await c_dict(),
        await c_tuple(),
        await c_model(),
        await c_dataclass(),
        await c_typeddict(),
        await c_datetime(),
        await c_uuid(),
        await c_bytes(),
        await c_none(),
        await c_untyped(),
    ]
    if block:
        await c_block()
    observed.append(out)


EXPECTED = [
    "text",
    1.5,
    42,
    {"a": [1, 2]},
    (1, "a"),
    Model(name="n", tags=["t"]),
    Point(1, 2.5),
    {"title": "Alien", "year": 1979},
    WHEN,
    ID,
    BLOB,
    None,
    {"k": [1, 2]},
]


async def test_values_round_trip_with_their_types(make_runtime: RuntimeFactory) -> None:
    calls.clear()
    observed.clear()
    async with make_runtime() as rt:
        await rt.start(values, True, run_id="v")
        with anyio.fail_after(5):
            while len((await rt.get_run("v")).checkpoints) < 13:
                await anyio.sleep(0.01)
    global gate
    gate = anyio.Event()
    gate.set()
    async with make_runtime(flows=[values]) as rt:
        await rt.result("v")
    got = observed[-1]
    assert calls == ["str"]  # replayed, not re-run
    assert got[:12] == EXPECTED[:12]
    assert got[12] == {"k": [1, 2]}
    for value, expected in zip(got, EXPECTED, strict=True):
        assert type(value) is type(expected)


async def test_unannotated_live_value_equals_replayed_value(rt: kitaru.Runtime) -> None:
    @flow
    async def f() -> Any:
        return await c_untyped()

    assert await (await rt.start(f)).result() == {"k": [1, 2]}


async def test_unserialisable_value_fails_at_its_checkpoint(rt: kitaru.Runtime) -> None:
    class Opaque:
        pass

    @checkpoint
    def bad() -> Any:
        return Opaque()

    @flow
    async def f() -> None:
        await bad()

    run = await rt.start(f)
    with pytest.raises(kitaru.FlowFailed) as caught:
        await run.result()
    err = caught.value.original
    assert isinstance(err, kitaru.SerializationError)
    assert "checkpoint 'bad'" in str(err) and "Opaque" in str(err)
    info = await run.info()
    assert info.checkpoints[0].status == "failed"


async def test_value_that_does_not_fit_its_annotation_fails(rt: kitaru.Runtime) -> None:
    @checkpoint
    def liar() -> int:
        return "not a number"  # type: ignore[return-value]

    @flow
    async def f() -> None:
        await liar()

    with pytest.raises(kitaru.FlowFailed) as caught:
        await (await rt.start(f)).result()
    assert isinstance(caught.value.original, kitaru.SerializationError)
    assert "int" in str(caught.value.original)


async def test_large_values_go_to_the_artifact_store(make_runtime: RuntimeFactory) -> None:
    big = "x" * 200_000
    calls.clear()
    gate2 = anyio.Event()

    @checkpoint
    def large() -> str:
        calls.append("large")
        return big

    @checkpoint
    async def wait_here() -> None:
        if not gate2.is_set():
            await gate2.wait()

    @flow(name="big")
    async def f() -> int:
        v = await large()
        await wait_here()
        return len(v)

    art = f"memory://art-{uuid.uuid4().hex}"
    async with make_runtime(artifacts=art, inline_threshold=64 * 1024) as rt:
        await rt.start(f, run_id="big")
        with anyio.fail_after(5):
            while not (await rt.get_run("big")).checkpoints:
                await anyio.sleep(0.01)
        info = await rt.get_run("big")
        ref = info.checkpoints[0].artifact
        assert ref is not None and ref.startswith("sha256:")
    gate2.set()
    async with make_runtime(artifacts=art, flows=[f]) as rt:
        assert await rt.result("big") == 200_000
    assert calls == ["large"]
