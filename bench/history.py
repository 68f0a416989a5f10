"""Bytes of history per step for a run that appends to a list, and what retention costs.

The workload is the built-in ``long`` flow with ``delay: 0``: every step appends its tick
number to ``progress`` and sets ``done`` and ``percent``. For runs of ``--steps`` (default
100, 1,000 and 10,000) on SQLite and PostgreSQL, each in a fresh database:

- history: ``runs.history_bytes``, what the steps' deltas and cursors keep, per step over
  the whole run and over its last 100 steps (flat: the history grows linearly);
- full copy: what the same steps would keep if each delta stored the whole ``progress``
  list again (deltas before ``add`` existed), computed from the same rows;
- growth: the database file (SQLite, after a WAL checkpoint) or the ``runs`` and
  ``steps`` tables with their indexes and TOAST (PostgreSQL), before and after the run.

Retention: ``--retention-runs`` finished runs of 9 ticks (10 step rows each) deleted the
way the retention job does, one transaction per batch at the default batch sizes;
milliseconds per transaction (what a checkpoint may wait behind on SQLite) and runs/s.

    .venv/bin/python -m bench.history [--only sqlite|postgresql] [--steps 100 1000 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import PG_ADMIN, machine, median, pg_admin, save, table


class Database:
    """A fresh database of one dialect: its URL, its size on disk, and a way to drop it."""

    def __init__(self, dialect: str, tmp: Path) -> None:
        self.dialect = dialect
        name = f"pocketrun_bench_history_{uuid.uuid4().hex[:8]}"
        if dialect == "sqlite":
            self.path = tmp / f"{name}.db"
            self.url = f"sqlite+aiosqlite:///{self.path}"
        else:
            self.name = name
            self.url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}".replace(
                "postgresql://", "postgresql+asyncpg://", 1
            )

    async def __aenter__(self) -> Database:
        if self.dialect == "postgresql":
            await pg_admin(f'CREATE DATABASE "{self.name}"')
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.dialect == "postgresql":
            await pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _file_size(self) -> int:
        import sqlite3

        conn = sqlite3.connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        wal = Path(f"{self.path}-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    async def size(self) -> int:
        if self.dialect == "sqlite":
            return self._file_size()
        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await conn.fetchval(
                "SELECT pg_total_relation_size('runs') + pg_total_relation_size('steps')"
            )
        finally:
            await conn.close()


async def open_migrated(url: str):
    from db.migrate import upgrade
    from db.store import open_store

    store = open_store(url)
    await upgrade(store)
    return store


async def new_run(store, steps: int) -> uuid.UUID:
    from db.store import NewRun
    from flows.registry import load_flows

    spec = load_flows().get("long")
    row, _ = await store.create(
        NewRun(
            tenant="bench",
            principal="bench",
            flow=spec.name,
            flow_version=spec.version,
            graph_hash=spec.graph_hash,
            mode="background",
            queue=spec.queue,
            priority=0,
            input=spec.validate_input({"steps": steps, "delay": 0}),
            metadata={},
            current_node=spec.start_node,
        )
    )
    return row["id"]


async def step_rows(store, run_id: uuid.UUID) -> list[tuple[int, Any, Any]]:
    from sqlalchemy import select

    from db.models import steps

    query = (
        select(steps.c.seq, steps.c.delta, steps.c.cursor)
        .where(steps.c.run_id == run_id)
        .order_by(steps.c.seq)
    )
    async with store.sa.read() as conn:
        return [(r.seq, r.delta, r.cursor) for r in await conn.execute(query)]


def sizes(rows: list[tuple[int, Any, Any]], start: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Bytes per step as stored (delta and cursor as the engine encodes them), and as they
    would be if every delta set each appended list whole again."""
    from workers.store import SharedStore

    store = SharedStore(start, max_bytes=1 << 40)
    now, full = [], []
    for _, delta, cursor in rows:
        cursor_bytes = len(orjson.dumps(cursor)) if cursor is not None else 0
        store.apply_json(delta)
        if delta is None:
            now.append(cursor_bytes)
            full.append(cursor_bytes)
            continue
        now.append(len(orjson.dumps(delta)) + cursor_bytes)
        whole = {**delta.get("set", {}), **{k: store.pick([k])[k] for k in delta.get("add", {})}}
        full.append(len(orjson.dumps({"set": whole, "del": delta.get("del", [])})) + cursor_bytes)
    return now, full


async def history_case(dialect: str, steps: int, tmp: Path) -> dict[str, Any]:
    from core.settings import Settings
    from flows.registry import load_flows
    from workers.engine import Outcome, RunEngine

    async with Database(dialect, tmp) as database:
        store = await open_migrated(database.url)
        try:
            before = await database.size()
            run_id = await new_run(store, steps)
            settings = Settings(database_url=database.url, log_level="WARNING")
            engine = RunEngine(store, load_flows(), settings, worker_name="bench")
            began = time.perf_counter()
            outcome = await engine.advance(run_id)
            seconds = time.perf_counter() - began
            engine.threads.shutdown(wait=False)
            run = await store.get(run_id)
            if outcome is not Outcome.finished or run is None or run["status"] != "succeeded":
                raise RuntimeError(f"the run ended {outcome}: {dict(run or {})}")
            after = await database.size()
            rows = await step_rows(store, run_id)
            history = await history_bytes(store, run_id)
        finally:
            await store.close()
    now, full = sizes(rows, run["input"])
    last = now[-101:-1]  # the last 100 ticks (the final row is the finish node)
    return {
        "db": dialect,
        "steps": steps,
        "rows": len(rows),
        "history_bytes": history,
        "bytes_per_step": history / len(rows),
        "bytes_per_step_last_100": sum(last) / len(last),
        "full_copy_bytes": sum(full),
        "full_copy_bytes_per_step_last_100": sum(full[-101:-1]) / len(last),
        "growth_bytes": after - before,
        "growth_bytes_per_step": (after - before) / len(rows),
        "seconds": seconds,
    }


async def history_bytes(store, run_id: uuid.UUID) -> int:
    from sqlalchemy import select

    from db.models import runs

    async with store.sa.read() as conn:
        query = select(runs.c.history_bytes).where(runs.c.id == run_id)
        return int((await conn.execute(query)).scalar_one())


async def retention_case(dialect: str, count: int, tmp: Path) -> dict[str, Any]:
    from sqlalchemy import update

    from core.settings import Settings
    from db.models import runs
    from db.types import utcnow
    from flows.registry import load_flows
    from workers.engine import RunEngine
    from workers.retention import DAY, batches

    async with Database(dialect, tmp) as database:
        store = await open_migrated(database.url)
        try:
            settings = Settings(database_url=database.url, log_level="WARNING")
            engine = RunEngine(store, load_flows(), settings, worker_name="bench")
            ids = [await new_run(store, 9) for _ in range(count)]
            for i in range(0, count, 16):
                await asyncio.gather(*(engine.advance(r) for r in ids[i : i + 16]))
            engine.threads.shutdown(wait=False)
            async with store.sa.write() as conn:
                await conn.execute(update(runs).values(finished_at=utcnow().replace(year=2000)))
            older = DAY
            found = await store.expired_runs(older, 10 * count)
            times, gone = [], 0
            began = time.perf_counter()
            for group in batches(found, settings.retention_batch_steps):
                for i in range(0, len(group), settings.retention_batch):
                    part = [run_id for run_id, _ in group[i : i + settings.retention_batch]]
                    t = time.perf_counter()
                    gone += await store.purge_runs(part, older)
                    times.append((time.perf_counter() - t) * 1000)
            seconds = time.perf_counter() - began
        finally:
            await store.close()
    return {
        "db": dialect,
        "runs": count,
        "deleted": gone,
        "transactions": len(times),
        "ms_per_transaction_median": median(times),
        "ms_per_transaction_max": max(times) if times else float("nan"),
        "runs_per_second": gone / seconds if seconds else float("nan"),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from core.logging import configure_logging

    configure_logging("WARNING")
    dialects = [args.only] if args.only else ["sqlite", "postgresql"]
    history, retention = [], []
    with tempfile.TemporaryDirectory(prefix="pocketrun-history-") as tmp:
        for dialect in dialects:
            for steps in args.steps:
                history.append(await history_case(dialect, steps, Path(tmp)))
            retention.append(await retention_case(dialect, args.retention_runs, Path(tmp)))
    return {
        "benchmark": "history",
        "machine": machine(),
        "params": {"steps": args.steps, "retention_runs": args.retention_runs},
        "history": history,
        "retention": retention,
    }


def report(payload: dict[str, Any]) -> str:
    history = table(
        "history of the `long` flow (appends to `progress` every step)",
        [
            "db",
            "steps",
            "history B",
            "B/step",
            "B/step last 100",
            "full-copy B/step last 100",
            "db growth B",
            "growth B/step",
            "s",
        ],
        [
            [
                r["db"],
                r["steps"],
                r["history_bytes"],
                r["bytes_per_step"],
                r["bytes_per_step_last_100"],
                r["full_copy_bytes_per_step_last_100"],
                r["growth_bytes"],
                r["growth_bytes_per_step"],
                r["seconds"],
            ]
            for r in payload["history"]
        ],
    )
    retention = table(
        "retention (runs of 10 step rows, default batch sizes)",
        ["db", "runs", "transactions", "ms/transaction median", "ms max", "runs/s"],
        [
            [
                r["db"],
                r["deleted"],
                r["transactions"],
                r["ms_per_transaction_median"],
                r["ms_per_transaction_max"],
                r["runs_per_second"],
            ]
            for r in payload["retention"]
        ],
    )
    return f"{history}\n\n{retention}"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    p.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10_000])
    p.add_argument("--retention-runs", type=int, default=2000)
    p.add_argument("--output", default="history", help="results/<name>.json")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> None:
    args = parse(argv)
    payload = asyncio.run(main(args))
    print()
    print(report(payload))
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
