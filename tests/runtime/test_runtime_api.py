"""The runtime's public surface: ways to run a flow, inspection, cancel, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

import kitaru
from kitaru import checkpoint, flow
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


@checkpoint
async def add_one(x: int) -> int:
    return x + 1


@flow
async def plus_one(x: int) -> int:
    return await add_one(x)


@flow
def plus_one_sync(x: int) -> int:
    return add_one(x)  # type: ignore[no-any-return]


async def test_three_ways_to_run_a_flow(make_runtime: RuntimeFactory) -> None:
    async with make_runtime() as rt:
        assert await (await rt.start(plus_one, 1)).result() == 2
        assert await plus_one(2) == 3  # inside an open runtime
        assert await plus_one_sync(3) == 4  # sync flows are awaitable when a loop runs
        runs = await rt.list_runs(flow="plus_one")
        assert len(runs) == 2


def test_flow_run_from_a_plain_script_uses_the_default_runtime() -> None:
    assert plus_one.run(41) == 42
    assert plus_one_sync(9) == 10  # no loop running: blocks and returns
    # The embedded default lives under ./.kitaru/ (the test's cwd).
    assert Path(".kitaru/kitaru.db").is_file()


async def test_bare_await_without_runtime_opens_the_default_one() -> None:
    assert await plus_one(5) == 6
    async with kitaru.runtime() as rt:
        runs = await rt.list_runs()
        assert [r.output for r in runs] == [6]
        assert rt.config.store == "sqlite:///.kitaru/kitaru.db"


async def test_configure_sets_process_defaults(tmp_path: object) -> None:
    kitaru.configure(store="memory://configured", max_live_runs=7)
    async with kitaru.runtime() as rt:
        assert rt.config.store == "memory://configured"
        assert rt.config.max_live_runs == 7
    async with kitaru.runtime(store="memory://explicit") as rt:
        assert rt.config.store == "memory://explicit"  # explicit arguments win
    with pytest.raises(kitaru.ConfigurationError, match="unknown setting"):
        kitaru.configure(stor="typo")
    with pytest.raises(kitaru.ConfigurationError, match="max_live_runs"):
        kitaru.configure(max_live_runs=0)


async def test_environment_and_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    await anyio.Path("kitaru.toml").write_text('store = "memory://from-file"\nmax_restarts = 9\n')
    async with kitaru.runtime() as rt:
        assert rt.config.store == "memory://from-file"
        assert rt.config.max_restarts == 9
    monkeypatch.setenv("KITARU_STORE", "memory://from-env")
    async with kitaru.runtime() as rt:
        assert rt.config.store == "memory://from-env"  # env beats the file
        assert rt.config.max_restarts == 9


async def test_get_run_and_list_runs(rt: kitaru.Runtime) -> None:
    a = await rt.start(plus_one, 1, run_id="a")
    await a.result()

    @flow
    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(kitaru.FlowFailed):
        await (await rt.start(boom)).result()
    info = await rt.get_run("a")
    assert (info.id, info.flow, info.status, info.output) == ("a", "plus_one", "completed", 2)
    assert info.created_at <= info.updated_at
    assert info.pending_wait is None
    assert info.usage == kitaru.Usage()
    assert [r.status for r in await rt.list_runs(status="failed")] == ["failed"]
    assert [r.id for r in await rt.list_runs(status="completed")] == ["a"]
    with pytest.raises(kitaru.SerializationError, match="argument 'x' of flow 'plus_one'"):
        await rt.start(plus_one, "not a number")
    assert len(await rt.list_runs(limit=1)) == 1
    with pytest.raises(kitaru.RunNotFound, match="nope"):
        await rt.get_run("nope")
    with pytest.raises(ValueError, match="not a valid RunStatus"):
        await rt.list_runs(status="bogus")


async def test_cancel_a_running_run(rt: kitaru.Runtime) -> None:
    started = anyio.Event()

    @checkpoint
    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    @flow
    async def stuck() -> None:
        await forever()

    run = await rt.start(stuck)
    await started.wait()
    assert await rt.cancel(run.id) is True
    with pytest.raises(kitaru.FlowCancelled):
        await run.result()
    assert (await run.info()).status == "cancelled"
    assert await rt.cancel(run.id) is False  # already finished
    with pytest.raises(kitaru.RunNotFound):
        await rt.cancel("missing")


async def test_bad_arguments_are_rejected_and_nothing_is_stored(rt: kitaru.Runtime) -> None:
    with pytest.raises(TypeError, match=r"arguments do not fit flow 'plus_one'\(x: 'int'\)"):
        await rt.start(plus_one, 1, 2)
    with pytest.raises(TypeError, match="expected a @flow-decorated function"):
        await rt.start(add_one, 1)  # type: ignore[arg-type]

    class Opaque:
        pass

    @flow
    async def takes(x: object) -> None:
        return None

    with pytest.raises(kitaru.SerializationError, match="argument 'x'"):
        await rt.start(takes, Opaque())
    assert await rt.list_runs() == []


def test_decorating_a_non_function_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="@flow decorates a function"):
        flow(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="@checkpoint decorates a function"):
        checkpoint("text")  # type: ignore[call-overload]

    def gen():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(TypeError, match="generator"):
        checkpoint(gen)


async def test_runtime_lifecycle_errors(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    with pytest.raises(kitaru.RuntimeStateError, match="unopened"):
        await runtime.start(plus_one, 1)
    async with runtime:
        pass
    with pytest.raises(kitaru.RuntimeStateError, match="entered once"):
        async with runtime:
            pass
    with pytest.raises(kitaru.RuntimeStateError, match="closed"):
        await runtime.get_run("x")


async def test_closing_leaves_no_tasks_or_threads(make_runtime: RuntimeFactory) -> None:
    before_tasks = len(anyio.get_running_tasks())
    before_threads = {t.ident for t in threading.enumerate()}
    started = anyio.Event()

    @checkpoint
    async def hang() -> None:
        started.set()
        await anyio.sleep_forever()

    @flow
    async def hanging() -> None:
        await hang()

    async with make_runtime() as rt:
        for _ in range(5):
            await rt.start(hanging)
        await plus_one(1)
        await started.wait()
    assert len(anyio.get_running_tasks()) == before_tasks

    def ours() -> set[int | None]:
        # anyio's idle worker pool belongs to the event loop, not to kitaru.
        alive = threading.enumerate()
        return {t.ident for t in alive if t.name != "AnyIO worker thread"} - before_threads

    with anyio.fail_after(5):  # aiosqlite's connection threads exit on close
        while ours():
            await anyio.sleep(0.01)


async def test_same_flow_name_for_different_functions_is_rejected(rt: kitaru.Runtime) -> None:
    @flow(name="plus_one")
    async def impostor(x: int) -> int:
        return x

    await rt.start(plus_one, 1)
    with pytest.raises(kitaru.ConfigurationError, match="two different flows"):
        await rt.start(impostor, 1)


async def test_list_runs_without_journals_gives_counts(rt: kitaru.Runtime) -> None:
    @kitaru.checkpoint
    async def step(i: int) -> int:
        return i

    @kitaru.flow
    async def counted(n: int) -> int:
        for i in range(n):
            await step(i)
        await kitaru.save("last", n)
        return n

    for n in (0, 3):
        await (await rt.start(counted, n)).result()
    full = {info.input["n"]: info for info in await rt.list_runs(flow="counted")}  # type: ignore[index]
    brief = {info.id: info for info in await rt.list_runs(flow="counted", journal=False)}
    for n, info in full.items():
        summary = brief[info.id]
        assert summary.checkpoint_count == info.checkpoint_count == n + 1
        assert (summary.checkpoints, summary.artifacts) == ([], {})
        assert summary.model_dump(exclude={"checkpoints", "artifacts"}) == info.model_dump(
            exclude={"checkpoints", "artifacts"}
        )


@kitaru.flow
async def answers_once() -> str:
    return await kitaru.wait(str)


async def test_an_idempotent_resend_to_a_finished_run_succeeds(
    make_runtime: RuntimeFactory,
) -> None:
    async with make_runtime(flows=[answers_once]) as rt:
        run = await rt.start(answers_once)
        first = await rt.send(run.id, "yes", key="webhook-1")
        assert await run.result() == "yes"
        # A retried webhook (or a sender that died before recording its send)
        # delivers once: the re-send succeeds with the same message id.
        assert await rt.send(run.id, "yes", key="webhook-1") == first
        with pytest.raises(kitaru.RunFinished):
            await rt.send(run.id, "again", key="webhook-2")
        with pytest.raises(kitaru.RunFinished):
            await rt.send(run.id, "again")
