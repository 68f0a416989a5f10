"""Durable step latency and throughput: pocketrun's engine against raw pocketflow and the floor.

One process measures, on SQLite (a file in a temp dir) and on PostgreSQL (a throwaway
database, dropped afterwards):

- raw:       pocketflow's own ``Flow.run`` on a 10-node flow of trivial nodes;
- floor:     one committed ``UPDATE`` of a JSON row per step, through the same
             ``db.database.Database`` writer (same driver, pragmas, BEGIN IMMEDIATE);
- pocketrun: ``RunEngine.advance`` on runs of that flow (claim, mark running, one
             checkpoint transaction per step).

Latency rounds interleave the two (10 floor UPDATEs, then one 10-step run, 30 times) so
drift on a shared machine hits both alike; reported: the medians over rounds, and the
median of the per-round ratios. Throughput: 200 runs with 8 ``advance`` loops in flight
against 8 concurrent writers each updating its own row.

    .venv/bin/python -m bench.engine [--only sqlite|postgresql] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pocketflow import Flow, Node
from sqlalchemy import Column, Integer, MetaData, Table, update

from bench.common import machine, median, save, table
from core.logging import configure_logging
from core.settings import Settings
from db.database import Database
from db.migrate import upgrade
from db.runs import NewRun, RunRepository
from db.types import JSONType
from flows.registry import FlowSpec, Registry, register
from workers.engine import Outcome, RunEngine

NODES = 10
PG_ADMIN = os.environ.get("POCKETRUN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- the flow ------------------------------------------------------------------------------


class Inc(Node):
    """Trivial work: add one to ``shared['count']``."""

    def prep(self, shared: dict[str, Any]) -> int:
        return shared.get("count", 0)

    def exec(self, prep_res: int) -> int:
        return prep_res + 1

    def post(self, shared: dict[str, Any], prep_res: int, exec_res: int) -> None:
        shared["count"] = exec_res


def build() -> Flow:
    first = node = Inc()
    for _ in range(NODES - 1):
        nxt = Inc()
        node >> nxt
        node = nxt
    return Flow(start=first)


# --- raw pocketflow ------------------------------------------------------------------------


def bench_raw(runs: int) -> float:
    """Per-step µs of pocketflow's own Flow.run."""
    flow = build()
    for _ in range(200):
        flow.run({"count": 0})
    started = time.perf_counter()
    for _ in range(runs):
        shared = {"count": 0}
        flow.run(shared)
    elapsed = time.perf_counter() - started
    assert shared["count"] == NODES
    return elapsed / (runs * NODES) * 1e6


# --- the floor -----------------------------------------------------------------------------

floor_meta = MetaData()
floor_table = Table(
    "bench_floor",
    floor_meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("data", JSONType),
)


async def floor_setup(db: Database, rows: int) -> None:
    async with db.write() as conn:
        await conn.run_sync(floor_meta.create_all)
        await conn.execute(floor_table.delete())
        await conn.execute(
            floor_table.insert(), [{"id": i, "data": {"count": 0}} for i in range(rows)]
        )


async def floor_writer(db: Database, row: int, count: int) -> None:
    """``count`` committed UPDATEs of one JSON row, one transaction each."""
    for i in range(count):
        async with db.write() as conn:
            await conn.execute(
                update(floor_table).where(floor_table.c.id == row).values(data={"count": i})
            )


async def floor_latency(db: Database, steps: int) -> float:
    started = time.perf_counter()
    await floor_writer(db, 0, steps)
    return (time.perf_counter() - started) / steps * 1e6


async def floor_throughput(db: Database, writers: int, steps: int) -> float:
    per = steps // writers
    started = time.perf_counter()
    await asyncio.gather(*(floor_writer(db, w, per) for w in range(writers)))
    return per * writers / (time.perf_counter() - started)


# --- pocketrun -----------------------------------------------------------------------------


class Pocketrun:
    def __init__(self, db: Database, settings: Settings, spec: FlowSpec, registry: Registry):
        self.db = db
        self.spec = spec
        self.repo = RunRepository(db)
        self.engine = RunEngine(db, registry, settings, worker_name="bench")

    async def create(self) -> uuid.UUID:
        spec = self.spec
        row, _ = await self.repo.create(
            NewRun(
                tenant="default",
                principal="bench",
                flow=spec.name,
                flow_version=spec.version,
                graph_hash=spec.graph_hash,
                mode="background",
                queue=spec.queue,
                priority=0,
                input={"count": 0},
                metadata={},
                run_timeout=spec.run_timeout,
            )
        )
        return row["id"]

    async def advance(self, run_id: uuid.UUID) -> None:
        outcome = await self.engine.advance(run_id)
        if outcome is not Outcome.finished:
            raise RuntimeError(f"run {run_id} did not finish: {outcome}")

    async def check(self, run_id: uuid.UUID) -> None:
        row = await self.repo.get(run_id)
        if row is None or row["status"] != "succeeded" or row["output"] != {"count": NODES}:
            raise RuntimeError(f"run {run_id} ended wrong: {dict(row or {})}")

    async def latency(self, runs: int, floor_db: Database | None = None) -> dict[str, float]:
        """Sequential runs: µs per step of ``advance`` and µs per ``create``.

        With ``floor_db``, each run is preceded by 10 floor UPDATEs (one per step), timed
        apart, so floor and pocketrun see the same moment of a noisy machine."""
        advance = create = floor = 0.0
        last = None
        for _ in range(runs):
            if floor_db is not None:
                t = time.perf_counter()
                await floor_writer(floor_db, 0, NODES)
                floor += time.perf_counter() - t
            t0 = time.perf_counter()
            last = await self.create()
            t1 = time.perf_counter()
            await self.advance(last)
            t2 = time.perf_counter()
            create += t1 - t0
            advance += t2 - t1
        assert last is not None
        await self.check(last)
        steps = runs * NODES
        return {
            "floor_us": floor / steps * 1e6,
            "pocketrun_us": advance / steps * 1e6,
            "create_us": create / runs * 1e6,
        }

    async def throughput(self, runs: int, in_flight: int) -> float:
        """Steps/s of ``runs`` queued runs advanced by ``in_flight`` concurrent loops."""
        ids = [await self.create() for _ in range(runs)]
        queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        for run_id in ids:
            queue.put_nowait(run_id)

        async def loop() -> None:
            while not queue.empty():
                await self.advance(queue.get_nowait())

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
        await self.check(ids[-1])
        return runs * NODES / elapsed


# --- one database --------------------------------------------------------------------------


async def bench_database(label: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(database_url=url, concurrency=args.in_flight, log_level="WARNING")
    registry = Registry()
    spec = register(
        "bench10", build, registry=registry, output=["count"], description="10 trivial nodes"
    )
    db = Database(url)
    try:
        await upgrade(db)
        await floor_setup(db, args.in_flight)
        pr = Pocketrun(db, settings, spec, registry)
        # warm-up: connections, statement caches, thread pool
        await floor_latency(db, 100)
        await pr.latency(5, floor_db=db)

        rounds: list[dict[str, float]] = []
        for r in range(args.rounds):
            got = await pr.latency(args.runs, floor_db=db)
            got["ratio"] = got["pocketrun_us"] / got["floor_us"]
            rounds.append(got)
            print(
                f"  [{label}] latency round {r + 1}: floor {got['floor_us']:.0f} µs/step, "
                f"pocketrun {got['pocketrun_us']:.0f} µs/step ({got['ratio']:.2f}x)",
                flush=True,
            )

        trounds: list[dict[str, float]] = []
        for r in range(args.throughput_rounds):
            floor_sps = await floor_throughput(db, args.in_flight, args.throughput_runs * NODES)
            engine_sps = await pr.throughput(args.throughput_runs, args.in_flight)
            trounds.append(
                {
                    "floor_steps_s": floor_sps,
                    "pocketrun_steps_s": engine_sps,
                    "ratio": engine_sps / floor_sps,
                }
            )
            print(
                f"  [{label}] throughput round {r + 1}: floor {floor_sps:.0f} steps/s, "
                f"pocketrun {engine_sps:.0f} steps/s ({engine_sps / floor_sps:.2f}x)",
                flush=True,
            )
        pr.engine.threads.shutdown(wait=True)
    finally:
        await db.close()

    return {
        "database": label,
        "floor_us_per_step": median([r["floor_us"] for r in rounds]),
        "pocketrun_us_per_step": median([r["pocketrun_us"] for r in rounds]),
        "create_us_per_run": median([r["create_us"] for r in rounds]),
        # the median of the per-round ratios: each round's pair saw the same machine load
        "latency_ratio_pocketrun_floor": median([r["ratio"] for r in rounds]),
        "floor_steps_per_s": median([r["floor_steps_s"] for r in trounds]),
        "pocketrun_steps_per_s": median([r["pocketrun_steps_s"] for r in trounds]),
        "throughput_ratio_pocketrun_floor": median([r["ratio"] for r in trounds]),
        "latency_rounds": rounds,
        "throughput_rounds": trounds,
    }


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_version() -> str:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    raw_us = bench_raw(args.raw_runs)
    print(f"  raw pocketflow: {raw_us:.2f} µs/step", flush=True)
    results: list[dict[str, Any]] = []
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="pocketrun-bench-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            results.append(await bench_database("sqlite", url, args))
    if args.only in (None, "postgresql"):
        info["postgresql"] = await pg_version()
        name = f"pocketrun_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        await pg_admin(f'CREATE DATABASE "{name}"')
        try:
            base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
            results.append(await bench_database("postgresql", f"{base}/{name}", args))
        finally:
            await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for r in results:
        r["raw_us_per_step"] = raw_us
        r["ratio_pocketrun_raw"] = r["pocketrun_us_per_step"] / raw_us
        r["latency_aim_met"] = r["latency_ratio_pocketrun_floor"] <= 1.5
        r["throughput_aim_met"] = r["throughput_ratio_pocketrun_floor"] >= 0.5
    return {
        "benchmark": "engine",
        "machine": info,
        "params": {
            "nodes": NODES,
            "rounds": args.rounds,
            "runs_per_round": args.runs,
            "throughput_runs": args.throughput_runs,
            "in_flight": args.in_flight,
            "throughput_rounds": args.throughput_rounds,
            "raw_runs": args.raw_runs,
        },
        "results": results,
    }


def report(payload: dict[str, Any]) -> str:
    results = payload["results"]
    lat = table(
        "Durable step latency (sequential runs of a 10-node flow; medians over rounds)",
        [
            "database",
            "raw µs/step",
            "floor µs/step",
            "pocketrun µs/step",
            "pocketrun/floor (aim <=1.5)",
            "pocketrun/raw",
        ],
        [
            [
                r["database"],
                r["raw_us_per_step"],
                r["floor_us_per_step"],
                r["pocketrun_us_per_step"],
                f"{r['latency_ratio_pocketrun_floor']:.2f}"
                + (" ok" if r["latency_aim_met"] else " MISS"),
                f"{r['ratio_pocketrun_raw']:.0f}x",
            ]
            for r in results
        ],
    )
    thr = table(
        f"Durable step throughput ({payload['params']['throughput_runs']} runs, "
        f"{payload['params']['in_flight']} in flight)",
        [
            "database",
            "floor steps/s (8 writers)",
            "pocketrun steps/s",
            "pocketrun/floor (aim >=0.5)",
        ],
        [
            [
                r["database"],
                r["floor_steps_per_s"],
                r["pocketrun_steps_per_s"],
                f"{r['throughput_ratio_pocketrun_floor']:.2f}"
                + (" ok" if r["throughput_aim_met"] else " MISS"),
            ]
            for r in results
        ],
    )
    return f"{lat}\n\n{thr}"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    p.add_argument("--rounds", type=int, default=5, help="latency rounds")
    p.add_argument("--runs", type=int, default=30, help="sequential runs per latency round")
    p.add_argument("--throughput-runs", type=int, default=200)
    p.add_argument("--throughput-rounds", type=int, default=3)
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument("--raw-runs", type=int, default=5000)
    p.add_argument("--output", default="engine", help="results/<name>.json")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> None:
    args = parse(argv)
    configure_logging("WARNING")
    payload = asyncio.run(main(args))
    print()
    print(report(payload))
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
