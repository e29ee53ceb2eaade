"""Benchmarks 15-17: the PostgreSQL run store.

The server is ``KITARU_TEST_POSTGRES_URL``, else ``postgresql://postgres@127.0.0.1:5432/test``
if it answers; with neither, the benchmark prints why and reports one "skipped"
row. Every measurement works in a schema of its own (``kb_<random>_<n>``),
and every schema is dropped at the end.

- **floor**: sequential ``INSERT`` of a journal-sized row, each its own
  transaction (asyncpg autocommit: the INSERT commits; one round trip), over
  one connection, into a table built ``LIKE`` kitaru's journal (same columns,
  same primary key, no foreign key). Rows have the values of a trivial
  checkpoint's entry. Measured interleaved with benchmark 15, with two
  context rows: a ``SELECT 1`` round trip, and rows/s when one INSERT (through
  ``unnest``, as the store writes entries) commits 10 rows at once, i.e. what
  a group commit could reach over one connection.
- **15 sequential**: one flow of 1,000 sequential trivial checkpoints; net
  time per checkpoint as in benchmark 1 (flow of 1,000 minus flow of 0).
- **16 concurrent**: 1,000 flows of 10 checkpoints in one runtime,
  checkpoints/s from the first start to the last result, each repetition on
  a fresh schema. Started together (one task per flow: start, then result;
  the target row) and started by one loop (``await rt.start()`` per flow, as
  in benchmark 2). The label says how many flows were hosted at once (median
  of samples every 5 ms): in the loop each start waits for its run's commit,
  so only a few dozen flows overlap and the figure is the start loop's. CPU
  seconds of this process and of the server's processes (``/proc``, when the
  server runs on this machine) over the same interval say what limits it.
- **17 workers**: one or two worker processes (``python -m benchmarks.postgres
  worker ...``, each a ``kitaru.runtime(flows=[...])`` as ``kitaru worker``
  opens one) open their runtimes; then 1,000 runs of 10 checkpoints are
  created in the store with no owner (as ``kitaru replay`` leaves a run for
  "any worker hosting the flow"), and the workers are released together
  through a start barrier, each calling ``rt.recover()`` (what a worker's
  lease sweep does every ``lease_seconds / 3``). Checkpoints/s from the
  release to the last completion; the ratio is two workers over one. The
  JSON has each worker's CPU and share of the checkpoints, and the server's
  CPU; the table shows the busier worker's share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

import kitaru
from kitaru.storage import RunRecord
from kitaru.storage.postgres import PostgresStore
from kitaru.storage.postgres._url import parse_url, quote_ident

from ._cases import Benchmark
from ._flows import sequential
from ._harness import REPO_ROOT, Context, Result, Target, atimed, median, scratch_dir

__all__ = ("BENCHMARK", "bench_postgres")

ENV = "KITARU_TEST_POSTGRES_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
US = 1e6

SEQ_CHECKPOINTS = 1_000
CONC_FLOWS = 1_000
CONC_CHECKPOINTS = 10
#: Rows per INSERT + COMMIT in the batched floor (context for benchmark 16).
BATCH = 10
WORKER_RUNS = 1_000
WORKER_CHECKPOINTS = 10
#: Repetitions of benchmark 17 (each spawns worker processes): at most this many.
WORKER_REPS = 5
WORKER_FLOW = "bench_pg_counted"

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- the server and its schemas ------------------------------------------------------


async def _connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(parse_url(url).dsn, timeout=5)


async def _server() -> tuple[str | None, str]:
    """The server URL to use, or None and why not."""
    url = os.environ.get(ENV) or DEFAULT_SERVER
    where = f"{ENV}" if os.environ.get(ENV) else f"{DEFAULT_SERVER} ({ENV} is unset)"
    try:
        with anyio.fail_after(6):
            conn = await _connect(url)
        await conn.close()
    except Exception as exc:
        return None, f"no PostgreSQL server at {where}: {type(exc).__name__}: {exc}"
    return url, where


class Schemas:
    """Store URLs on fresh schemas of one server; drops them all on close."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.prefix = f"kb_{uuid.uuid4().hex[:10]}"
        self.made: list[str] = []

    def url(self, **params: object) -> str:
        schema = f"{self.prefix}_{len(self.made)}"
        self.made.append(schema)
        query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **params}.items())
        return f"{self.server}{'&' if '?' in self.server else '?'}{query}"

    async def drop(self) -> None:
        conn = await _connect(self.server)
        try:
            for schema in self.made:
                await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        finally:
            await conn.close()


# -- CPU accounting -------------------------------------------------------------------


def _proc_cpu(pid: int) -> tuple[str, float] | None:
    """(command name, CPU seconds) of a process, from /proc; None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = data[data.index("(") + 1 : data.rindex(")")]
    fields = data[data.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    return name, (int(fields[11]) + int(fields[12])) / _TICK


def _server_cpu() -> dict[int, float] | None:
    """CPU seconds of every ``postgres`` process on this machine (None: none visible)."""
    found = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            got = _proc_cpu(int(entry.name))
            if got is not None and got[0] == "postgres":
                found[int(entry.name)] = got[1]
    return found or None


@dataclass
class CpuMeter:
    """CPU seconds spent over an interval: this process, some children, the server."""

    children: list[int] = field(default_factory=list)
    _self: float = 0.0
    _kids: dict[int, float] = field(default_factory=dict)
    _server: dict[int, float] | None = None

    def start(self) -> None:
        self._self = time.process_time()
        self._kids = {pid: (_proc_cpu(pid) or ("", 0.0))[1] for pid in self.children}
        self._server = _server_cpu()

    def stop(self) -> dict[str, Any]:
        kids = {
            pid: (_proc_cpu(pid) or ("", 0.0))[1] - before for pid, before in self._kids.items()
        }
        server = None
        now = _server_cpu()
        if self._server is not None and now is not None:
            # Backends that started meanwhile began at zero.
            server = sum(cpu - self._server.get(pid, 0.0) for pid, cpu in now.items())
        return {
            "self_cpu_s": time.process_time() - self._self,
            "workers_cpu_s": kids,
            "server_cpu_s": server,
        }


def _shares(cpu: dict[str, Any], seconds: float) -> dict[str, Any]:
    """CPU seconds as cores busy over ``seconds`` of wall time."""
    out: dict[str, Any] = {"self_cores": round(cpu["self_cpu_s"] / seconds, 2)}
    if cpu["workers_cpu_s"]:
        out["worker_cores"] = [round(c / seconds, 2) for c in cpu["workers_cpu_s"].values()]
    if cpu["server_cpu_s"] is not None:
        out["server_cores"] = round(cpu["server_cpu_s"] / seconds, 2)
    return out


# -- the floor -------------------------------------------------------------------------


@dataclass
class Floor:
    """Sequential autocommit INSERTs of journal-sized rows over one connection."""

    conn: Any
    table: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    position: int = 0

    @classmethod
    async def open(cls, url: str) -> Floor:
        """A connection and a table like the journal of ``url``'s schema (opened once)."""
        s = quote_ident(parse_url(url).schema)
        conn = await _connect(url)
        await conn.execute(f"CREATE TABLE {s}.floor (LIKE {s}.journal INCLUDING ALL)")
        return cls(conn, f"{s}.floor")

    async def commits(self, rows: int) -> float:
        """Seconds per INSERT (+ its implicit COMMIT), over ``rows`` sequential rows."""
        sql = (
            f"INSERT INTO {self.table} (run_id, position, name, kind, status, attempts, "
            "started_at, duration_s, value, ref, error, metadata) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )
        execute = self.conn.execute
        start = time.perf_counter()
        for _ in range(rows):
            self.position += 1
            p = self.position
            value = str(p % SEQ_CHECKPOINTS).encode()  # what a trivial step(i) stores
            args = (self.run_id, p, "step", "checkpoint", "completed", 1, time.time(), 2e-5)
            await execute(sql, *args, value, None, None, None)
        return (time.perf_counter() - start) / rows

    async def batched(self, rows: int, per_commit: int) -> float:
        """Rows per second when each INSERT (+ COMMIT) carries ``per_commit`` rows.

        What a group commit could reach over one connection: the rows go in as
        arrays through ``unnest``, as the store writes journal entries.
        """
        sql = (
            f"INSERT INTO {self.table} (run_id, position, name, kind, status, attempts, "
            "started_at, duration_s, value) SELECT * FROM unnest($1::text[], $2::int4[], "
            "$3::text[], $4::text[], $5::text[], $6::int4[], $7::float8[], $8::float8[], "
            "$9::bytea[])"
        )
        n = per_commit
        start = time.perf_counter()
        for _ in range(rows // n):
            first = self.position + 1
            self.position += n
            positions = list(range(first, first + n))
            await self.conn.execute(
                sql,
                [self.run_id] * n,
                positions,
                ["step"] * n,
                ["checkpoint"] * n,
                ["completed"] * n,
                [1] * n,
                [time.time()] * n,
                [2e-5] * n,
                [str(p % SEQ_CHECKPOINTS).encode() for p in positions],
            )
        return rows // n * n / (time.perf_counter() - start)

    async def round_trips(self, count: int) -> float:
        """Seconds per ``SELECT 1`` (one round trip, nothing written)."""
        start = time.perf_counter()
        for _ in range(count):
            await self.conn.fetchval("SELECT 1")
        return (time.perf_counter() - start) / count

    async def close(self) -> None:
        await self.conn.close()


# -- 15: sequential -----------------------------------------------------------------------


@dataclass
class _Sequential:
    per_checkpoint: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    empties: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)
    hops: list[float] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)


async def _sequential(ctx: Context, url: str, folder: Path) -> _Sequential:
    n = SEQ_CHECKPOINTS
    out = _Sequential()
    artifacts = str(folder / "artifacts")
    async with kitaru.runtime(store=url, artifacts=artifacts, flows=[sequential]) as rt:

        async def run(count: int) -> None:
            handle = await rt.start(sequential, count)
            assert await handle.result() == count

        floor = await Floor.open(url)
        try:
            await floor.commits(n)  # warm-ups
            await floor.round_trips(n)
            await floor.batched(n, BATCH)
            await run(n)
            await run(0)
            for _ in range(ctx.settings.reps):
                out.floors.append(await floor.commits(n))
                out.hops.append(await floor.round_trips(n))
                out.batched.append(await floor.batched(n, BATCH))
                total = await atimed(lambda: run(n))
                empty = await atimed(lambda: run(0))
                out.totals.append(total)
                out.empties.append(empty)
                out.per_checkpoint.append((total - empty) / n)
        finally:
            await floor.close()
    return out


# -- 16: concurrent -----------------------------------------------------------------------


@dataclass
class _Concurrent:
    seconds: list[float] = field(default_factory=list)
    cpu: list[dict[str, Any]] = field(default_factory=list)
    #: Flows hosted at once, sampled every 5 ms: median and peak of each repetition.
    in_flight: list[tuple[float, int]] = field(default_factory=list)


async def _concurrent(ctx: Context, schemas: Schemas, folder: Path, starts: str) -> _Concurrent:
    """``starts="together"``: one task per flow (start, then result), all spawned at
    once. ``starts="loop"``: ``await rt.start()`` per flow in a loop, then every
    result awaited together."""
    out = _Concurrent()
    for rep in range(ctx.settings.reps + 1):  # the first one is the warm-up
        url = schemas.url()
        artifacts = str(folder / "artifacts")
        async with kitaru.runtime(store=url, artifacts=artifacts, flows=[sequential]) as rt:

            async def one(rt: kitaru.Runtime = rt) -> None:
                handle = await rt.start(sequential, CONC_CHECKPOINTS)
                await handle.result()

            async def run_all(rt: kitaru.Runtime = rt) -> None:
                async with anyio.create_task_group() as tg:
                    if starts == "together":
                        for _ in range(CONC_FLOWS):
                            tg.start_soon(one)
                    else:
                        for _ in range(CONC_FLOWS):
                            handle = await rt.start(sequential, CONC_CHECKPOINTS)
                            tg.start_soon(handle.result)

            samples: list[int] = []

            async def sample(rt: kitaru.Runtime = rt, samples: list[int] = samples) -> None:
                while True:
                    samples.append(rt.live_runs)
                    await anyio.sleep(0.005)

            meter = CpuMeter()
            async with anyio.create_task_group() as outer:
                outer.start_soon(sample)
                meter.start()
                seconds = await atimed(run_all)
                cpu = meter.stop()
                outer.cancel_scope.cancel()
        if rep:
            out.seconds.append(seconds)
            out.cpu.append(_shares(cpu, seconds))
            out.in_flight.append((median([float(n) for n in samples]), max(samples)))
    return out


# -- 17: one worker process vs two ---------------------------------------------------------

_executed = 0


@kitaru.checkpoint
async def counted_step(i: int) -> int:
    """A trivial checkpoint that counts its executions in this process."""
    global _executed
    _executed += 1
    return i


@kitaru.flow(name=WORKER_FLOW)
async def counted(n: int) -> int:
    """``n`` counted trivial checkpoints."""
    for i in range(n):
        await counted_step(i)
    return n


async def _worker_main(url: str, folder: Path, index: int) -> None:
    """A worker process hosting ``counted`` until SIGTERM.

    It opens its runtime, says it is ready and waits for the barrier; then it
    claims and runs what nobody hosts (``rt.recover()``, what a worker's lease
    sweep does every ``lease_seconds / 3``), so workers start claiming together.
    """
    go = folder / "go"
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with kitaru.runtime(
            store=url, artifacts=str(folder / "artifacts"), flows=[counted]
        ) as rt:
            (folder / f"ready-{index}").touch()
            while not go.exists():  # noqa: ASYNC110 - another process releases the barrier
                await anyio.sleep(0.001)
            await rt.recover()
            async for _ in signals:
                break
    (folder / f"stats-{index}.json").write_text(json.dumps({"checkpoints": _executed}))


async def _create_unowned(url: str) -> None:
    async with PostgresStore(url) as store:
        for _ in range(WORKER_RUNS):
            now = time.time()
            record = RunRecord(
                id=uuid.uuid4().hex,
                flow=WORKER_FLOW,
                status="running",
                created_at=now,
                updated_at=now,
                input=counted.encode_input((WORKER_CHECKPOINTS,), {}),
            )
            await store.create_run(record)


@asynccontextmanager
async def _workers(url: str, folder: Path, count: int) -> Any:
    """``count`` worker processes, ready and waiting at the barrier."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    procs = []
    try:
        for i in range(count):
            command = [sys.executable, "-m", "benchmarks.postgres", "worker", url, str(folder)]
            procs.append(
                await anyio.open_process(
                    [*command, str(i)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=None,
                    cwd=REPO_ROOT,
                    env=env,
                )
            )
        with anyio.fail_after(60):
            while not all((folder / f"ready-{i}").exists() for i in range(count)):
                for proc in procs:
                    if proc.returncode is not None:
                        raise RuntimeError(f"benchmark worker exited early ({proc.returncode})")
                await anyio.sleep(0.01)
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(20):
            for proc in procs:
                await proc.wait()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()


async def _workers_rep(schemas: Schemas, folder: Path, count: int) -> dict[str, Any]:
    """One measurement: seconds from the barrier's release to the last completed run."""
    url = schemas.url()
    rep_dir = folder / f"w{len(schemas.made)}"
    rep_dir.mkdir()
    conn: Any = None
    s = quote_ident(parse_url(url).schema)
    try:
        async with _workers(url, rep_dir, count) as procs:
            await _create_unowned(url)  # the workers' runtimes are open: nobody claims yet
            conn = await _connect(url)
            meter = CpuMeter([p.pid for p in procs])
            meter.start()
            begun = time.perf_counter()
            (rep_dir / "go").touch()
            with anyio.fail_after(120):
                unfinished = f"SELECT count(*) FROM {s}.runs WHERE status <> 'completed'"
                while await conn.fetchval(unfinished):  # noqa: ASYNC110 - other processes
                    await anyio.sleep(0.01)
            seconds = time.perf_counter() - begun
            cpu = meter.stop()
    finally:
        if conn is not None:
            await conn.close()
    shares = [
        json.loads((rep_dir / f"stats-{i}.json").read_text())["checkpoints"] for i in range(count)
    ]
    assert sum(shares) >= WORKER_RUNS * WORKER_CHECKPOINTS, shares
    return {"seconds": seconds, "checkpoints_by_worker": shares, **_shares(cpu, seconds)}


async def _one_vs_two(
    ctx: Context, schemas: Schemas, folder: Path
) -> dict[int, list[dict[str, Any]]]:
    reps = min(ctx.settings.reps, WORKER_REPS)
    found: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    await _workers_rep(schemas, folder, 1)  # warm-up (bytecode, server caches)
    for _ in range(reps):
        for count in (1, 2):
            found[count].append(await _workers_rep(schemas, folder, count))
    return found


# -- the benchmark ---------------------------------------------------------------------------


def _skipped(reason: str) -> list[Result]:
    print(f"  skipped: {reason}", file=sys.stderr, flush=True)
    return [Result("15-17 PostgreSQL", f"skipped: {reason}", float("nan"), "-")]


def _median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return median(values) if values else None


async def bench_postgres(ctx: Context) -> list[Result]:
    server, where = await _server()
    if server is None:
        return _skipped(where)
    print(f"  PostgreSQL: {where}", file=sys.stderr, flush=True)
    schemas = Schemas(server)
    try:
        with scratch_dir() as folder:
            seq = await _sequential(ctx, schemas.url(), folder)
            together = await _concurrent(ctx, schemas, folder, "together")
            loop = await _concurrent(ctx, schemas, folder, "loop")
            workers = await _one_vs_two(ctx, schemas, folder)
    finally:
        await schemas.drop()
    return _results(seq, together, loop, workers)


def _results(
    seq: _Sequential,
    together: _Concurrent,
    loop: _Concurrent,
    workers: dict[int, list[dict[str, Any]]],
) -> list[Result]:
    floor = median(seq.floors)
    floor_text = f"asyncpg INSERT+COMMIT {floor * US:.0f} us"
    per = median(seq.per_checkpoint)
    rows = [
        Result(
            "floor (PostgreSQL)",
            "asyncpg INSERT+COMMIT of a journal-sized row, one connection",
            floor * US,
            "us/commit",
            samples=[s * US for s in seq.floors],
            details={
                "commits_per_s": 1 / floor,
                "rows": SEQ_CHECKPOINTS,
                "method": "await conn.execute(INSERT ..., *args) per row (autocommit: the "
                "INSERT commits), one connection, into a table LIKE the journal",
            },
        ),
        Result(
            "floor (PostgreSQL, context)",
            "asyncpg round trip, SELECT 1",
            median(seq.hops) * US,
            "us",
            samples=[s * US for s in seq.hops],
        ),
        Result(
            "floor (PostgreSQL, context)",
            f"asyncpg INSERT+COMMIT of {BATCH} rows at once (unnest), one connection",
            median(seq.batched),
            "rows/s",
            ratio=median(seq.batched) * floor,
            floor=f"{1 / floor:,.0f} commits/s ({floor_text})",
            samples=seq.batched,
            details={
                "method": "what a group commit of 10 flows' entries could reach over one "
                "connection: one INSERT ... SELECT * FROM unnest(arrays) per 10 rows"
            },
        ),
        Result(
            "15 sequential (PostgreSQL)",
            "per checkpoint, net of a 0-checkpoint flow",
            per * US,
            "us",
            target=Target("<=", 1.3, on="ratio"),
            ratio=per / floor,
            floor=floor_text,
            samples=[s * US for s in seq.per_checkpoint],
            details={
                "checkpoints": SEQ_CHECKPOINTS,
                "gross_us_per_checkpoint": median(seq.totals) / SEQ_CHECKPOINTS * US,
                "empty_flow_ms": median(seq.empties) * 1e3,
                "pairwise_ratios": [
                    p / f for p, f in zip(seq.per_checkpoint, seq.floors, strict=True)
                ],
            },
        ),
    ]
    total = CONC_FLOWS * CONC_CHECKPOINTS
    for label, m, target, method in (
        (
            "started together",
            together,
            Target(">=", 3.0, on="ratio"),
            "one task per flow (rt.start, then its result), all spawned at once",
        ),
        (
            "started by one loop",
            loop,
            None,
            "await rt.start() per flow in a loop, each result awaited by a task of its own; "
            "each start waits for its run's commit, so this measures the start loop",
        ),
    ):
        rates = [total / s for s in m.seconds]
        rate = median(rates)
        in_flight = median([med for med, _ in m.in_flight])
        rows.append(
            Result(
                "16 concurrent (PostgreSQL)",
                f"{CONC_FLOWS} flows x {CONC_CHECKPOINTS} checkpoints, {label} "
                f"(~{in_flight:.0f} hosted at once)",
                rate,
                "checkpoints/s",
                target=target,
                ratio=rate * floor,
                floor=f"{1 / floor:,.0f} commits/s ({floor_text})",
                samples=rates,
                details={
                    "method": method + "; fresh schema per repetition",
                    "seconds": m.seconds,
                    "flows_hosted_median_and_peak": m.in_flight,
                    "cpu_cores_busy": m.cpu,
                    "self_cores_median": _median_of(m.cpu, "self_cores"),
                    "server_cores_median": _median_of(m.cpu, "server_cores"),
                },
            )
        )
    total = WORKER_RUNS * WORKER_CHECKPOINTS
    by_count = {n: [total / r["seconds"] for r in reps] for n, reps in workers.items()}
    for n in (1, 2):
        rows.append(
            Result(
                "17 workers (PostgreSQL)",
                f"{n} worker process{'es' if n > 1 else ''}, {WORKER_RUNS} runs x "
                f"{WORKER_CHECKPOINTS} checkpoints",
                median(by_count[n]),
                "checkpoints/s",
                samples=by_count[n],
                details={"repetitions": workers[n]},
            )
        )
    busier = [max(r["checkpoints_by_worker"]) / total for r in workers[2]]
    rows.append(
        Result(
            "17 workers (PostgreSQL)",
            "2 workers: the busier one's share of the checkpoints",
            median(busier) * 100,
            "%",
            samples=[b * 100 for b in busier],
            details={"splits": [r["checkpoints_by_worker"] for r in workers[2]]},
        )
    )
    ratios = [b / a for a, b in zip(by_count[1], by_count[2], strict=True)]
    rows.append(
        Result(
            "17 workers (PostgreSQL)",
            "two workers / one worker, throughput",
            median(ratios),
            "x",
            samples=ratios,
            details={
                "method": "runs created with no owner while the workers' runtimes are open, "
                "then the workers released together through a start barrier, each calling "
                "rt.recover(); time from the release to the last completed run (polled every "
                "10 ms)",
                "worker_cores_1": [r.get("worker_cores") for r in workers[1]],
                "worker_cores_2": [r.get("worker_cores") for r in workers[2]],
                "server_cores_1": [r.get("server_cores") for r in workers[1]],
                "server_cores_2": [r.get("server_cores") for r in workers[2]],
            },
        )
    )
    return rows


BENCHMARK = Benchmark(
    "postgres",
    "15-17. PostgreSQL: sequential, concurrent, one worker vs two",
    bench_postgres,
    slow=True,
)


def _main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "worker":
        _, url, folder, index = argv
        anyio.run(_worker_main, url, Path(folder), int(index))
        return 0
    print("usage: python -m benchmarks.postgres worker URL FOLDER INDEX", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
