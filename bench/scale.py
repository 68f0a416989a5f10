"""Status lookups and filtered, paginated lists at a million runs.

Fills a database with N runs over 20 tenants, 10 flows and the seven statuses, then
times the API's own queries (RunRepository.get / .list) and prints the query plans.

    .venv/bin/python -m bench.scale [--runs 1000000] [--dialect sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
from sqlalchemy import insert, select, text

from core.ids import uuid7
from db.migrate import upgrade
from db.models import runs
from db.store import RunFilter, RunStore, open_store

STATUSES = ["queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out"]
WEIGHTS = [1, 1, 1, 80, 10, 5, 2]
TENANTS = [f"tenant-{i}" for i in range(20)]
FLOWS = [f"flow-{i}" for i in range(10)]
PG_ADMIN = os.environ.get("POCKETRUN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results"


def rows(n: int, start: datetime):
    rng = random.Random(7)
    span_ms = 30 * 24 * 3600 * 1000
    stamps = sorted(rng.randrange(span_ms) for _ in range(n))
    for ms in stamps:
        created = start + timedelta(milliseconds=ms)
        yield {
            "id": uuid7(int(created.timestamp() * 1000)),
            "tenant": rng.choice(TENANTS),
            "principal": "bench",
            "flow": rng.choice(FLOWS),
            "flow_version": "1",
            "graph_hash": "0" * 16,
            "status": rng.choices(STATUSES, WEIGHTS)[0],
            "mode": "background",
            "queue": "default",
            "priority": 0,
            "input": {"n": ms % 1000},
            "metadata": {},
            "created_at": created,
            "seq": 10,
            "version": 12,
            "state_seq": 0,
            "deliveries": 1,
            "cancel_requested": False,
        }


async def fill(db: RunStore, n: int, start: datetime) -> float:
    began = time.perf_counter()
    batch: list[dict] = []
    for row in rows(n, start):
        batch.append(row)
        if len(batch) == 5000:
            async with db.sa.write() as conn:
                await conn.execute(insert(runs), batch)
            batch = []
    if batch:
        async with db.sa.write() as conn:
            await conn.execute(insert(runs), batch)
    async with db.sa.write() as conn:
        await conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - began


async def timed(fn, repeat: int = 50) -> float:
    await fn()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


async def measure(db: RunStore, start: datetime, n: int) -> dict[str, float]:
    skip = min(5000, n // len(TENANTS) // 2)
    repo = db
    async with db.sa.read() as conn:
        sample_ids = [
            row.id
            for row in await conn.execute(
                select(runs.c.id)
                .where(runs.c.tenant == "tenant-3")
                .order_by(runs.c.id)
                .limit(1000)
                .offset(skip)
            )
        ]
    rng = random.Random(1)
    page = await repo.list(RunFilter(tenant="tenant-3", limit=50))
    deep = await repo.list(RunFilter(tenant="tenant-3", limit=50, before_id=sample_ids[0]))
    window = start + timedelta(days=10)
    cases = {
        "status lookup by id": lambda: repo.get(rng.choice(sample_ids)),
        "list newest 50 (tenant)": lambda: repo.list(RunFilter(tenant="tenant-3", limit=50)),
        "list flow filter": lambda: repo.list(
            RunFilter(tenant="tenant-3", flow="flow-4", limit=50)
        ),
        "list status=running": lambda: repo.list(
            RunFilter(tenant="tenant-3", statuses=["running"], limit=50)
        ),
        "list status=failed,timed_out": lambda: repo.list(
            RunFilter(tenant="tenant-3", statuses=["failed", "timed_out"], limit=50)
        ),
        "list next page (cursor)": lambda: repo.list(
            RunFilter(tenant="tenant-3", limit=50, before_id=page[-1]["id"])
        ),
        "list deep page (cursor)": lambda: repo.list(
            RunFilter(tenant="tenant-3", limit=50, before_id=deep[-1]["id"])
        ),
        "list created window (1 day)": lambda: repo.list(
            RunFilter(
                tenant="tenant-3",
                created_after=window,
                created_before=window + timedelta(days=1),
                limit=50,
            )
        ),
    }
    return {name: await timed(fn) for name, fn in cases.items()}


async def explain(db: RunStore) -> str:
    sql = (
        "SELECT id FROM runs WHERE tenant = 'tenant-3' AND status IN ('running') "
        "ORDER BY id DESC LIMIT 50"
    )
    prefix = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
    async with db.sa.read() as conn:
        return "\n".join(
            " ".join(str(c) for c in row) for row in await conn.execute(text(prefix + sql))
        )


async def run_dialect(dialect: str, n: int) -> dict:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    admin = None
    if dialect == "sqlite":
        tmp = tempfile.mkdtemp(prefix="pocketrun-scale-")
        url = f"sqlite+aiosqlite:///{tmp}/scale.db"
    else:
        name = f"pocketrun_scale_{uuid.uuid4().hex[:6]}"
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = (
            PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            + "/"
            + name
        )
    db = open_store(url)
    try:
        await upgrade(db)
        fill_s = await fill(db, n, start)
        timings = await measure(db, start, n)
        plan = await explain(db)
    finally:
        await db.close()
        if admin is not None:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()
    return {"runs": n, "fill_seconds": round(fill_s, 1), "median_ms": timings, "plan": plan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    results = {d: asyncio.run(run_dialect(d, args.runs)) for d in dialects}
    names = list(next(iter(results.values()))["median_ms"])
    print(f"\nmedian ms per query at {args.runs:,} runs")
    print(f"{'query':<32}" + "".join(f"{d:>14}" for d in dialects))
    for name in names:
        print(f"{name:<32}" + "".join(f"{results[d]['median_ms'][name]:>14.3f}" for d in dialects))
    for d in dialects:
        print(f"\n{d} plan for a status-filtered list:\n{results[d]['plan']}")
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "date": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    (RESULTS / "scale.json").write_bytes(
        orjson.dumps({"meta": meta, "results": results}, option=orjson.OPT_INDENT_2)
    )


if __name__ == "__main__":
    main()
