"""Where a durable step's time goes: each part of ``RunEngine.advance`` timed on its own.

    .venv/bin/python -m bench.breakdown [--only sqlite|postgresql]

Parts, in µs per step of the 10-node flow (sequential, one run at a time):

- thread hop:     ``run_in_executor`` of a no-op under ``asyncio.wait_for`` (what a sync
                  node costs to leave the loop and come back), no node work;
- runner + store: ``StepRunner.step`` plus the store's working copy, diff and apply and the
                  cursor's JSON: the engine's per-step CPU without any database;
- expr build:     building fresh UPDATE and INSERT expressions per step (no execution), as
                  ``Checkpoints.commit`` did before its statements were prebuilt;
- commit:         ``Checkpoints.commit`` alone (fenced UPDATE ... RETURNING + INSERT step);
- floor:          one committed UPDATE of a JSON row (the floor of ``bench.engine``);
- claim:          ``Checkpoints.claim`` (it also marks the run running) per run, / 10 steps;
- advance:        the whole ``RunEngine.advance``, per step.

Timings on a shared machine drift; the driver round trips are exact. They count each
hop to aiosqlite's connection thread (SQLite) or each message round trip asyncpg awaits
(PostgreSQL: BEGIN, COMMIT, pings, prepared-statement executions and prepares) for: one
floor UPDATE transaction, one ``Checkpoints.commit``, ``claim`` and a
whole 10-step ``advance``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, update

from bench.common import machine, median, save, table
from bench.engine import (
    NODES,
    Pocketrun,
    build,
    floor_latency,
    floor_setup,
    floor_writer,
    pg_admin,
)
from core.logging import configure_logging
from core.settings import Settings
from db.checkpoints import Checkpoints, StepRecord
from db.database import Database
from db.migrate import upgrade
from db.models import runs, steps
from db.types import utcnow
from flows.compiler import first_leaf
from flows.registry import Registry, register
from workers.cursor import Cursor
from workers.runner import StepRunner
from workers.store import SharedStore

PG_ADMIN = os.environ.get("POCKETRUN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class RoundTrips:
    """Counts driver round trips by wrapping the driver's awaitables (bench-only patch)."""

    def __init__(self) -> None:
        self.count = 0
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        counter = self

        async def counted(*args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return await original(*args, **kwargs)

        setattr(owner, name, counted)
        self._undo.append((owner, name, original))

    def __enter__(self) -> RoundTrips:
        import aiosqlite.core
        import asyncpg.connection
        import asyncpg.prepared_stmt

        self._wrap(aiosqlite.core.Connection, "_execute")
        for name in ("execute", "fetchrow", "prepare"):
            self._wrap(asyncpg.connection.Connection, name)
        for name in ("fetch", "fetchrow"):
            self._wrap(asyncpg.prepared_stmt.PreparedStatement, name)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


async def round_trips(db: Database, pr: Pocketrun) -> dict[str, float]:
    cp = Checkpoints(db)
    owner = pr.engine.owner
    run_id = await pr.create()
    with RoundTrips() as rt:
        await floor_writer(db, 0, 10)
        floor = rt.take() / 10
        await cp.claim(run_id, owner, 15)
        claim = rt.take()
        cursor = Cursor().to_json()
        for seq in range(10):
            now = utcnow()
            step = StepRecord(
                seq + 1,
                "n",
                "succeeded",
                1,
                None,
                now,
                now,
                "bench",
                None,
                {"set": {}, "del": []},
                cursor,
                "n",
            )
            await cp.commit(run_id, owner, seq, 15, step, {"cursor": cursor, "current_node": "n"})
        commit = rt.take() / 10
        fresh = await pr.create()
        rt.take()
        await pr.advance(fresh)
        advance = rt.take() / NODES
        await pr.repo.get(fresh)
        get = rt.take()
    return {
        "floor txn": floor,
        "commit": commit,
        "claim (per run)": claim,
        "advance, per step": advance,
        "advance / floor": advance / floor,
        "RunRepository.get (a poll)": get,
    }


async def thread_hop(threads: ThreadPoolExecutor, n: int) -> float:
    loop = asyncio.get_running_loop()

    def noop() -> None:
        return None

    started = time.perf_counter()
    for _ in range(n):
        await asyncio.wait_for(loop.run_in_executor(threads, noop), 60)
    return (time.perf_counter() - started) / n * 1e6


async def runner_only(spec: Any, threads: ThreadPoolExecutor, runs_: int) -> float:
    started = time.perf_counter()
    for _ in range(runs_):
        _, graph = spec.instantiate()
        runner = StepRunner(graph, threads, "bench")
        store = SharedStore({"count": 0}, max_bytes=8 << 20)
        cursor = Cursor()
        seq = 0
        while not cursor.done:
            result = await runner.step(cursor, store.working_copy(), seq + 1, 60)
            delta = store.diff(result.shared, result.node or "")
            delta.to_json()
            store.apply(delta)
            cursor = result.cursor
            cursor.to_json()
            first_leaf(graph, cursor.next)
            seq += 1
    return (time.perf_counter() - started) / (runs_ * NODES) * 1e6


def build_statements(n: int) -> float:
    run_id = uuid.uuid4()
    now = utcnow()
    started = time.perf_counter()
    for i in range(n):
        update(runs).where(
            and_(runs.c.id == run_id, runs.c.seq == i, runs.c.lease_owner == "o")
        ).values(
            {
                "lease_expires_at": now,
                "cursor": {"v": 1},
                "current_node": "x",
                "seq": i + 1,
                "version": runs.c.version + 1,
            }
        ).returning(runs.c.cancel_requested)
        insert(steps).values(
            {
                "run_id": run_id,
                "seq": i + 1,
                "node": "x",
                "status": "succeeded",
                "attempts": 1,
                "action": None,
                "started_at": now,
                "finished_at": now,
                "duration_ms": 0.1,
                "worker": "w",
                "error": None,
                "delta": {"set": {}},
            }
        )
    return (time.perf_counter() - started) / n * 1e6


async def commits(pr: Pocketrun, n: int) -> tuple[float, float]:
    """(µs per Checkpoints.commit, µs per claim)."""
    cp = Checkpoints(pr.db)
    owner = pr.engine.owner
    run_id = await pr.create()
    t0 = time.perf_counter()
    claimed = await cp.claim(run_id, owner, 15)
    assert claimed is not None
    claim_us = (time.perf_counter() - t0) * 1e6
    cursor = Cursor().to_json()
    started = time.perf_counter()
    for seq in range(n):
        now = utcnow()
        step = StepRecord(
            seq + 1,
            "n",
            "succeeded",
            1,
            None,
            now,
            now,
            "bench",
            None,
            {"set": {"count": seq}, "del": []},
        )
        await cp.commit(run_id, owner, seq, 15, step, {"cursor": cursor, "current_node": "n"})
    commit_us = (time.perf_counter() - started) / n * 1e6
    # claim on fresh runs, a few times
    claims = []
    for _ in range(20):
        rid = await pr.create()
        t0 = time.perf_counter()
        await cp.claim(rid, owner, 15)
        claims.append((time.perf_counter() - t0) * 1e6)
    del claim_us
    return commit_us, median(claims)


async def bench_database(label: str, url: str, rounds: int) -> dict[str, Any]:
    settings = Settings(database_url=url, concurrency=8, log_level="WARNING")
    registry = Registry()
    spec = register("bench10", build, registry=registry, output=["count"])
    db = Database(url)
    threads = ThreadPoolExecutor(max_workers=8)
    parts: dict[str, list[float]] = {}
    try:
        await upgrade(db)
        await floor_setup(db, 1)
        pr = Pocketrun(db, settings, spec, registry)
        await floor_latency(db, 100)
        await pr.latency(5)
        await thread_hop(threads, 200)
        for _ in range(rounds):
            got = {
                "thread hop": await thread_hop(threads, 2000),
                "runner + store (no db)": await runner_only(spec, threads, 200),
                "expr build (pre-fix way)": build_statements(2000),
            }
            commit_us, claim_us = await commits(pr, 300)
            got["commit"] = commit_us
            got["floor"] = await floor_latency(db, 300)
            got["claim / 10"] = claim_us / NODES
            got["advance (whole)"] = (await pr.latency(30))["pocketrun_us"]
            for k, v in got.items():
                parts.setdefault(k, []).append(v)
        trips = await round_trips(db, pr)
    finally:
        threads.shutdown()
        await db.close()
    return {
        "database": label,
        "us_per_step": {k: median(v) for k, v in parts.items()},
        "driver_round_trips": trips,
        "rounds": parts,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="pocketrun-bench-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            out.append(await bench_database("sqlite", url, args.rounds))
    if args.only in (None, "postgresql"):
        name = f"pocketrun_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        await pg_admin(f'CREATE DATABASE "{name}"')
        try:
            base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
            out.append(await bench_database("postgresql", f"{base}/{name}", args.rounds))
        finally:
            await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {"benchmark": "breakdown", "machine": machine(), "results": out}


def run(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.breakdown")
    p.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--output", default="breakdown")
    args = p.parse_args(argv)
    configure_logging("WARNING")
    payload = asyncio.run(main(args))
    names = list(payload["results"][0]["us_per_step"])
    print(
        table(
            "Per-step breakdown, µs (medians over rounds)",
            ["part", *[r["database"] for r in payload["results"]]],
            [[n, *[r["us_per_step"][n] for r in payload["results"]]] for n in names],
        )
    )
    trips = list(payload["results"][0]["driver_round_trips"])
    print()
    print(
        table(
            "Driver round trips (exact counts)",
            ["what", *[r["database"] for r in payload["results"]]],
            [[n, *[r["driver_round_trips"][n] for r in payload["results"]]] for n in trips],
        )
    )
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
