"""Side by side with peers: pocketrun, the raw-driver floors, LangGraph and DBOS Transact.

The workload of DESIGN.md section 7 (``bench/peer_flows.py``): a 10-node flow whose every
node reads ``counter``, writes ``counter + 1`` and a fresh 1 KB ``payload``. Contenders,
per database, all in the same run:

- floor ``sqlite3`` / ``asyncpg``: the raw driver; per flow one INSERT, then per step the
  new state json-encoded and ONE autocommit UPDATE of that row (prepared on asyncpg);
- LangGraph: a ``StateGraph`` of the 10 nodes with ``SqliteSaver`` / ``PostgresSaver``,
  ``durability="sync"``, a fresh ``thread_id`` per flow;
- DBOS Transact: a workflow of 10 ``@DBOS.step`` calls (system database on PostgreSQL,
  and on SQLite, which this DBOS supports);
- pocketrun: ``RunEngine.advance`` on a run created in the store (``PocketrunSide``).

Every SQLite contender gets its own file in one temp dir, in WAL mode with
``synchronous=NORMAL`` (the floor's durability; LangGraph and DBOS are handed connections
set up so). Every PostgreSQL contender gets its own throwaway database (dropped after),
``synchronous_commit`` left on.

Latency: ``--rounds`` rounds of ``--flows`` sequential flows per contender, one flow of
each contender in turn (the order rotated each round) so drift on a shared machine hits
all alike; per flow wall time (async contenders timed inside the event loop), median and
p90 over all rounds; ratios are medians of the per-round ratios (each round's median
over the floor's, or a peer's).
Throughput: ``--throughput-flows`` flows with ``--in-flight`` in flight, in
``--throughput-rounds`` rounds, again rotated; flows/s.

    .venv/bin/python -m bench.peers [--only sqlite|postgresql] [--rounds 5] [--flows 40]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import machine, median, save, table
from bench.peer_flows import NODES, build, langgraph_builder, next_state

PG_ADMIN = os.environ.get("POCKETRUN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(name: str) -> str:
    """A plain ``postgresql://`` URL for database ``name`` on the admin URL's server."""
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


def sqlite_pragmas(conn: Any) -> None:
    """The floor's durability: WAL, ``synchronous=NORMAL``."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")


def check(state: Any) -> None:
    if state["counter"] != NODES or len(state["payload"]) != 1024:
        raise RuntimeError(f"a flow ended wrong: counter={state.get('counter')}")


# --- contenders ----------------------------------------------------------------------------
#
# A sync contender: ``run_flow()`` in the calling thread, and ``workers(n)``: n callables,
# each with resources of its own, run by n threads for the concurrent part.
# An async contender: ``async run_flow()`` on the bench's one event loop; the concurrent
# part is n tasks on that loop.


class Contender:
    name: str = ""
    role: str = "peer"  # "floor", "peer" or "pocketrun"
    is_async: bool = False

    def workers(self, n: int) -> list[Callable[[], None]]:
        raise NotImplementedError


class SqliteFloor(Contender):
    """Raw stdlib sqlite3, autocommit, one UPDATE per step.

    Concurrently: n threads share ONE connection. SQLite has one writer anyway, and a
    connection per thread (measured: about the same flows/s, noisier) only adds waits on
    the write lock. sqlite runs the connection in serialized mode, so each statement is
    atomic; each UPDATE is still its own commit, no step is batched with another."""

    name = "sqlite3 (floor)"
    role = "floor"

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        sqlite_pragmas(self.conn)
        self.conn.execute("CREATE TABLE flows (id INTEGER PRIMARY KEY, state TEXT NOT NULL)")
        self.ids = itertools.count(1)

    def run_flow(self) -> None:
        conn = self.conn
        rid = next(self.ids)
        state: dict[str, Any] = {"counter": 0}
        conn.execute("INSERT INTO flows (id, state) VALUES (?, ?)", (rid, json.dumps(state)))
        for _ in range(NODES):
            state = next_state(state)
            conn.execute("UPDATE flows SET state = ? WHERE id = ?", (json.dumps(state), rid))
        check(state)

    def workers(self, n: int) -> list[Callable[[], None]]:
        return [self.run_flow] * n

    def close(self) -> None:
        self.conn.close()


class AsyncpgFloor(Contender):
    """Raw asyncpg: one prepared autocommit UPDATE per step; a pool of ``in_flight``."""

    name = "asyncpg (floor)"
    role = "floor"
    is_async = True

    INSERT = "INSERT INTO flows (state) VALUES ($1::jsonb) RETURNING id"
    UPDATE = "UPDATE flows SET state = $1::jsonb WHERE id = $2"

    async def setup(self, url: str, pool_size: int) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
        await self.pool.execute("CREATE TABLE flows (id bigserial PRIMARY KEY, state jsonb)")

    async def run_flow(self) -> None:
        async with self.pool.acquire() as conn:
            # asyncpg prepares each statement once per connection and caches it
            state: dict[str, Any] = {"counter": 0}
            rid = await conn.fetchval(self.INSERT, json.dumps(state))
            for _ in range(NODES):
                state = next_state(state)
                await conn.execute(self.UPDATE, json.dumps(state), rid)
        check(state)

    async def close(self) -> None:
        await self.pool.close()


class LangGraphSide(Contender):
    """A compiled ``StateGraph`` of the 10 nodes with a checkpointer, durability="sync".

    A saver serializes its calls with a lock of its own, so each worker thread gets a
    graph with its own saver and connection: the fastest way to run 8 flows at once."""

    is_async = False

    def __init__(self, name: str, connect: Callable[[], Any], saver: Callable[[Any], Any]):
        self.name = name
        self._connect = connect
        self._saver = saver
        self._conns: list[Any] = []
        self._graphs: list[Any] = []
        self._graph(0).checkpointer.setup()

    def _graph(self, i: int) -> Any:
        while len(self._graphs) <= i:
            conn = self._connect()
            self._conns.append(conn)
            self._graphs.append(langgraph_builder().compile(checkpointer=self._saver(conn)))
        return self._graphs[i]

    def _run(self, graph: Any) -> None:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        check(graph.invoke({"counter": 0}, config, durability="sync"))

    def run_flow(self) -> None:
        self._run(self._graphs[0])

    def workers(self, n: int) -> list[Callable[[], None]]:
        return [lambda g=self._graph(i): self._run(g) for i in range(n)]

    def close(self) -> None:
        for conn in self._conns:
            conn.close()


def langgraph_sqlite(path: Path) -> LangGraphSide:
    from langgraph.checkpoint.sqlite import SqliteSaver

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        sqlite_pragmas(conn)
        return conn

    return LangGraphSide("LangGraph + SqliteSaver", connect, SqliteSaver)


def langgraph_postgres(url: str) -> LangGraphSide:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import Connection
    from psycopg.rows import dict_row

    def connect() -> Any:
        # as PostgresSaver.from_conn_string connects
        return Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)

    return LangGraphSide("LangGraph + PostgresSaver", connect, PostgresSaver)


_dbos_flow: Callable[[int], dict[str, Any]] | None = None


def dbos_workflow() -> Callable[[int], dict[str, Any]]:
    """The DBOS workflow (decorated once per process): 10 steps, each checkpointed."""
    global _dbos_flow
    if _dbos_flow is None:
        from dbos import DBOS

        @DBOS.step()
        def bench_step(state: dict[str, Any]) -> dict[str, Any]:
            return next_state(state)

        @DBOS.workflow()
        def bench_flow(counter: int) -> dict[str, Any]:
            state: dict[str, Any] = {"counter": counter}
            for _ in range(NODES):
                state = bench_step(state)
            return state

        _dbos_flow = bench_flow
    return _dbos_flow


class DbosSide(Contender):
    """DBOS Transact: a workflow of 10 steps, called directly (it runs in the caller's
    thread); concurrently, n threads each calling it. DBOS is a singleton: one launched
    instance per database, destroyed before the next."""

    def __init__(self, label: str, url: str, sqlite_path: Path | None = None) -> None:
        from dbos import DBOS

        self.name = f"DBOS ({label})"
        flow = dbos_workflow()
        config: dict[str, Any] = {
            "name": "pocketrun-bench",
            "system_database_url": url,
            "log_level": "WARNING",
        }
        if sqlite_path is not None:
            # DBOS's own SQLite engine keeps the rollback journal and synchronous=FULL;
            # hand it one with the floor's WAL + synchronous=NORMAL, and the settings its
            # own engine applies (IMMEDIATE transactions, busy timeout, foreign keys).
            import sqlalchemy as sa

            engine = sa.create_engine(url)

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = "IMMEDIATE"
                sqlite_pragmas(dbapi_conn)
                dbapi_conn.execute("PRAGMA foreign_keys=ON")

            config["system_database_engine"] = engine
        DBOS(config=config)  # type: ignore[arg-type]
        DBOS.launch()
        self._flow = flow

    def run_flow(self) -> None:
        check(self._flow(0))

    def workers(self, n: int) -> list[Callable[[], None]]:
        return [self.run_flow] * n

    def close(self) -> None:
        from dbos import DBOS

        DBOS.destroy(destroy_registry=False)


class PocketrunSide(Contender):
    """pocketrun's side, kept to this one class so a change of the database layer touches
    nothing else: create a run in the store, ``RunEngine.advance`` it to the end, check
    that it succeeded (a read of the run, timed with the flow).

    Sync nodes run on the engine's loop (``sync_nodes="loop"``), as every peer runs them
    in the calling thread."""

    name = "pocketrun"
    role = "pocketrun"
    is_async = True

    async def setup(self, url: str, concurrency: int = 8) -> None:
        from core.settings import Settings
        from db.migrate import upgrade
        from db.store import open_store
        from flows.registry import Registry, register
        from workers.engine import RunEngine

        settings = Settings(database_url=url, concurrency=concurrency, log_level="WARNING")
        registry = Registry()
        self.spec = register(
            "bench10",
            build,
            registry=registry,
            step_timeout=None,
            run_timeout=None,
            sync_nodes="loop",
            mode="background",
        )
        self.store = store = open_store(url)
        await upgrade(store)
        self.engine = RunEngine(store, registry, settings, worker_name="bench")

    async def run_flow(self) -> None:
        from workers.engine import Outcome

        spec = self.spec
        from db.store import NewRun

        row, _ = await self.store.create(
            NewRun(
                tenant="default",
                principal="bench",
                flow=spec.name,
                flow_version=spec.version,
                graph_hash=spec.graph_hash,
                mode="background",
                queue=spec.queue,
                priority=0,
                input={"counter": 0},
                metadata={},
                run_timeout=spec.run_timeout,
                current_node=spec.start_node,
            )
        )
        outcome = await self.engine.advance(row["id"])
        done = await self.store.get(row["id"])
        if outcome is not Outcome.finished or done is None or done["status"] != "succeeded":
            raise RuntimeError(f"run {row['id']} ended {outcome}: {dict(done or {})}")
        check(done["output"])

    async def close(self) -> None:
        self.engine.threads.shutdown(wait=True)
        await self.store.close()


# --- measuring -----------------------------------------------------------------------------


class Bench:
    """Runs contenders, sync ones in this thread or worker threads, async ones on one loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(aw)

    def latency(self, c: Contender, flows: int) -> list[float]:
        """Per-flow wall seconds of ``flows`` sequential flows."""
        if c.is_async:
            return self.run(self._alatency(c, flows))
        out = []
        for _ in range(flows):
            t = time.perf_counter()
            c.run_flow()
            out.append(time.perf_counter() - t)
        return out

    async def _alatency(self, c: Any, flows: int) -> list[float]:
        out = []
        for _ in range(flows):
            t = time.perf_counter()
            await c.run_flow()
            out.append(time.perf_counter() - t)
        return out

    def throughput(self, c: Contender, flows: int, in_flight: int) -> float:
        """Flows/s of ``flows`` flows with ``in_flight`` at a time."""
        if c.is_async:
            return self.run(self._athroughput(c, flows, in_flight))
        workers = c.workers(in_flight)
        left = itertools.count()
        lock = threading.Lock()

        def loop(work: Callable[[], None]) -> None:
            while True:
                with lock:
                    if next(left) >= flows:
                        return
                work()

        with ThreadPoolExecutor(in_flight) as pool:
            started = time.perf_counter()
            for f in [pool.submit(loop, w) for w in workers]:
                f.result()
            return flows / (time.perf_counter() - started)

    async def _athroughput(self, c: Any, flows: int, in_flight: int) -> float:
        left = iter(range(flows))

        async def loop() -> None:
            for _ in left:
                await c.run_flow()

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        return flows / (time.perf_counter() - started)

    def close(self, c: Contender) -> None:
        res = c.close()  # type: ignore[attr-defined]
        if asyncio.iscoroutine(res):
            self.run(res)


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def measure(bench: Bench, label: str, cs: list[Contender], args: argparse.Namespace) -> dict:
    for c in cs:  # warm-up: connections, statement caches, threads
        bench.latency(c, args.warmup)
        if args.throughput_rounds:
            bench.throughput(c, max(args.in_flight, args.warmup), args.in_flight)

    lat: dict[str, list[list[float]]] = {c.name: [] for c in cs}
    for r in range(args.rounds):
        k = r % len(cs)
        order = cs[k:] + cs[:k]
        for c in order:
            lat[c.name].append([])
        for _ in range(args.flows):  # one flow of each in turn: drift hits all alike
            for c in order:
                lat[c.name][-1].extend(bench.latency(c, 1))
        print(
            f"  [{label}] latency round {r + 1}: "
            + ", ".join(f"{c.name} {median(lat[c.name][-1]) * 1e3:.2f}" for c in cs)
            + " ms/flow (median)",
            flush=True,
        )

    thr: dict[str, list[float]] = {c.name: [] for c in cs}
    for r in range(args.throughput_rounds):
        k = r % len(cs)
        for c in cs[k:] + cs[:k]:
            thr[c.name].append(bench.throughput(c, args.throughput_flows, args.in_flight))
        print(
            f"  [{label}] throughput round {r + 1}: "
            + ", ".join(f"{c.name} {thr[c.name][-1]:.0f}" for c in cs)
            + " flows/s",
            flush=True,
        )

    rows = []
    for c in cs:
        every = [t for rnd in lat[c.name] for t in rnd]
        rows.append(
            {
                "contender": c.name,
                "role": c.role,
                "latency_ms_median": median(every) * 1e3,
                "latency_ms_p90": p90(every) * 1e3,
                "flows_per_s": median(thr[c.name]),
                "latency_round_medians_ms": [median(rnd) * 1e3 for rnd in lat[c.name]],
                "latency_round_p90s_ms": [p90(rnd) * 1e3 for rnd in lat[c.name]],
                "throughput_rounds_flows_per_s": thr[c.name],
            }
        )
    return {"database": label, "contenders": rows}


# --- ratios and aims -----------------------------------------------------------------------

# (database, what, contender named by prefix, aim, limit):
#   "latency": pocketrun latency / floor latency <= limit            (the floor only)
#   "faster":  peer latency / pocketrun latency  >= limit
#   "flows":   pocketrun flows/s / peer flows/s  >= limit
AIMS = [
    ("sqlite", "latency", "sqlite3 (floor)", 3.0),
    ("sqlite", "flows", "LangGraph + SqliteSaver", 5.0),
    ("postgresql", "latency", "asyncpg (floor)", 2.0),
    ("postgresql", "faster", "LangGraph + PostgresSaver", 3.0),
    ("postgresql", "faster", "DBOS (postgresql)", 5.0),
    ("postgresql", "flows", "LangGraph + PostgresSaver", 5.0),
    ("postgresql", "flows", "DBOS (postgresql)", 5.0),
]


def per_round(pr: dict, other: dict, what: str) -> list[float]:
    if what == "flows":
        a, b = pr["throughput_rounds_flows_per_s"], other["throughput_rounds_flows_per_s"]
        return [x / y for x, y in zip(a, b, strict=True)]
    a, b = pr["latency_round_medians_ms"], other["latency_round_medians_ms"]
    if what == "latency":
        return [x / y for x, y in zip(a, b, strict=True)]
    return [y / x for x, y in zip(a, b, strict=True)]  # "faster": other / pocketrun


def ratios(result: dict) -> None:
    """Per contender: its latency over the floor's, and pocketrun's ratios to it; the aims."""
    rows = {r["contender"]: r for r in result["contenders"]}
    pr = rows.get("pocketrun")
    floor = next((r for r in result["contenders"] if r["role"] == "floor"), None)
    for r in result["contenders"]:
        if floor is not None:
            r["latency_vs_floor"] = median(per_round(r, floor, "latency"))
            r["latency_vs_floor_rounds"] = per_round(r, floor, "latency")
        if pr is not None and r is not pr:
            r["pocketrun_faster_x"] = median(per_round(pr, r, "faster"))
            r["pocketrun_faster_x_rounds"] = per_round(pr, r, "faster")
            if r["throughput_rounds_flows_per_s"]:
                r["pocketrun_flows_x"] = median(per_round(pr, r, "flows"))
                r["pocketrun_flows_x_rounds"] = per_round(pr, r, "flows")
    aims = []
    for db, what, name, limit in AIMS:
        if db != result["database"] or pr is None or name not in rows:
            continue
        if what == "flows" and not rows[name]["throughput_rounds_flows_per_s"]:
            continue
        got = per_round(pr, rows[name], what)
        value = median(got)
        ok = value <= limit if what == "latency" else value >= limit
        label = {
            "latency": f"pocketrun latency / {name} <= {limit:g}",
            "faster": f"{name} latency / pocketrun >= {limit:g}",
            "flows": f"pocketrun flows/s / {name} >= {limit:g}",
        }[what]
        aims.append(
            {
                "aim": label,
                "value": value,
                "rounds_min": min(got),
                "rounds_max": max(got),
                "rounds": got,
                "ok": ok,
            }
        )
    result["aims"] = aims


def report(payload: dict[str, Any]) -> str:
    p = payload["params"]
    out = []
    for res in payload["results"]:
        header = [
            "contender",
            "median ms/flow",
            "p90 ms",
            f"flows/s ({p['in_flight']} in flight)",
            "latency / floor",
            "pocketrun faster",
            "pocketrun flows/s x",
        ]
        rows = []
        for r in res["contenders"]:
            rows.append(
                [
                    r["contender"],
                    r["latency_ms_median"],
                    r["latency_ms_p90"],
                    r["flows_per_s"],
                    f"{r['latency_vs_floor']:.2f}x" if "latency_vs_floor" in r else "-",
                    f"{r['pocketrun_faster_x']:.2f}x" if "pocketrun_faster_x" in r else "-",
                    f"{r['pocketrun_flows_x']:.2f}x" if "pocketrun_flows_x" in r else "-",
                ]
            )
        out.append(
            table(
                f"{res['database']}: {p['rounds']} rounds x {p['flows']} sequential flows; "
                f"{p['throughput_rounds']} rounds x {p['throughput_flows']} flows "
                "(ratios: medians of per-round ratios)",
                header,
                rows,
            )
        )
        if res["aims"]:
            out.append(
                table(
                    f"{res['database']}: aims",
                    ["aim", "measured", "per-round range", "status"],
                    [
                        [
                            a["aim"],
                            f"{a['value']:.2f}",
                            f"{a['rounds_min']:.2f}-{a['rounds_max']:.2f}",
                            "ok" if a["ok"] else "MISS",
                        ]
                        for a in res["aims"]
                    ],
                )
            )
    return "\n\n".join(out)


# --- databases -----------------------------------------------------------------------------


async def pg_admin(*sql: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        for s in sql:
            await conn.execute(s)
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


def wanted(args: argparse.Namespace, key: str) -> bool:
    return key not in args.skip


def bench_sqlite(bench: Bench, tmp: Path, args: argparse.Namespace) -> dict:
    cs: list[Contender] = []
    try:
        cs.append(SqliteFloor(tmp / "floor.db"))
        if wanted(args, "pocketrun"):
            pr = PocketrunSide()
            bench.run(pr.setup(f"sqlite+aiosqlite:///{tmp / 'pocketrun.db'}", args.in_flight))
            cs.append(pr)
        if wanted(args, "langgraph"):
            cs.append(langgraph_sqlite(tmp / "langgraph.db"))
        if wanted(args, "dbos"):
            path = tmp / "dbos.sqlite"
            cs.append(DbosSide("sqlite", f"sqlite:///{path}", sqlite_path=path))
        return measure(bench, "sqlite", cs, args)
    finally:
        for c in reversed(cs):
            bench.close(c)


def bench_postgres(bench: Bench, args: argparse.Namespace, info: dict) -> dict:
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = {k: f"pocketrun_peers_{k}_{tag}" for k in ("floor", "pocketrun", "langgraph", "dbos")}
    info["postgresql"] = bench.run(pg_admin(*(f'CREATE DATABASE "{n}"' for n in names.values())))
    cs: list[Contender] = []
    try:
        floor = AsyncpgFloor()
        bench.run(floor.setup(pg_url(names["floor"]), args.in_flight))
        cs.append(floor)
        if wanted(args, "pocketrun"):
            pr = PocketrunSide()
            url = pg_url(names["pocketrun"]).replace("postgresql://", "postgresql+asyncpg://", 1)
            bench.run(pr.setup(url, args.in_flight))
            cs.append(pr)
        if wanted(args, "langgraph"):
            cs.append(langgraph_postgres(pg_url(names["langgraph"])))
        if wanted(args, "dbos"):
            cs.append(DbosSide("postgresql", pg_url(names["dbos"])))
        return measure(bench, "postgresql", cs, args)
    finally:
        for c in reversed(cs):
            bench.close(c)
        bench.run(
            pg_admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names.values()))
        )


def main(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    info["versions"] = versions()
    bench = Bench()
    results = []
    try:
        if args.only in (None, "sqlite"):
            with tempfile.TemporaryDirectory(prefix="pocketrun-peers-") as tmp:
                results.append(bench_sqlite(bench, Path(tmp), args))
        if args.only in (None, "postgresql"):
            results.append(bench_postgres(bench, args, info))
    finally:
        bench.loop.close()
    for res in results:
        ratios(res)
    return {
        "benchmark": "peers",
        "machine": info,
        "params": {
            "nodes": NODES,
            "rounds": args.rounds,
            "flows": args.flows,
            "warmup": args.warmup,
            "throughput_rounds": args.throughput_rounds,
            "throughput_flows": args.throughput_flows,
            "in_flight": args.in_flight,
            "skip": sorted(args.skip),
        },
        "results": results,
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "pocketflow",
        "langgraph",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "psycopg",
        "dbos",
        "asyncpg",
        "aiosqlite",
        "sqlalchemy",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    p.add_argument("--rounds", type=int, default=5, help="latency rounds")
    p.add_argument("--flows", type=int, default=40, help="sequential flows per contender per round")
    p.add_argument("--warmup", type=int, default=10, help="flows per contender before timing")
    p.add_argument("--throughput-rounds", type=int, default=3)
    p.add_argument("--throughput-flows", type=int, default=200)
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["pocketrun", "langgraph", "dbos"],
        help="leave a contender out (repeatable)",
    )
    p.add_argument("--output", default="peers", help="results/<name>.json")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> None:
    args = parse(argv)
    try:
        from core.logging import configure_logging

        configure_logging("WARNING")
    except ImportError:
        pass
    payload = main(args)
    print()
    print(report(payload))
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
