"""Schedule firing delay: how late a tick's run is created, with 1,000 active schedules.

Per database (the embedded default, a SQLite file in WAL, and PostgreSQL), each case on a
fresh, migrated database:

- ``--schedules`` (1,000) enabled rows are written straight into ``schedules``, as
  ``POST /v1/schedules`` builds them (``every`` = ``--every`` seconds, 10), for a one-node
  PocketFlow flow registered in a ``Registry()`` of the bench's own;
- the real ``workers.scheduler.Scheduler`` (``Settings(schedule_poll=1.0)``, the rest
  default) then runs in this process for ``--seconds`` (30) from the first tick, plus a
  drain of ``DRAIN`` seconds so ticks due near the end are not cut off. Its ``hand_over``
  only counts: firing is measured, not execution (past ``TENANT_CONCURRENCY``, 100 runs
  in flight, new runs are created held and not handed over; creation is the same).

Cases:

- ``spread``: first ticks spread uniformly over the first interval (schedule ``i`` at
  ``start + i * every / schedules``), so about ``schedules / every`` (100) ticks fall due
  each second, at distinct moments;
- ``burst``: every schedule on the same tick, so 1,000 ticks fall due at one moment
  every ``every`` seconds;
- ``spread x2``: ``spread`` with two Schedulers in the same process, each on its own
  store object (its own pools and SQLite writer), racing for every tick.

The firing delay of a tick is its run's ``created_at`` (set by the store as it inserts
the run, the host's clock) minus ``trigger.tick``, for ticks up to the end of the
measured window. ``committed`` is the same from the moment ``store.create`` returned
in the scheduler (the run's transaction committed; timed by wrapping the scheduler's
``_start``). Ticks due are counted from each schedule's grid (first tick + k * every up
to the window's end); ``missed`` = due - fired (0 expected: a catch-up after downtime
would fold ticks into one run). ``duplicates`` = (schedule, tick) pairs with more than
one run (0 expected); ``lost races`` = firings whose run existed already (the other
Scheduler won: wasted work, not a duplicate).

    .venv/bin/python -m bench.schedules [--schedules 1000] [--every 10] [--seconds 30]
        [--only sqlite|postgresql] [--cases spread burst spread-x2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import machine, median, save, scratch_database, table
from bench.history import open_migrated

FLOW = "sched_noop"
TENANT = "bench"
LEAD = 3.0  # seconds from seeding to the first tick: the scheduler's start-up
DRAIN = 5.0  # seconds the schedulers keep going after the window, for its last ticks
CASES = ("spread", "burst", "spread-x2")


def _registry() -> Any:
    from pocketflow import Flow, Node

    from flows.registry import Registry, register

    class Noop(Node):
        def post(self, shared, prep_res, exec_res):
            shared["done"] = True

    def build_noop() -> Flow:
        return Flow(start=Noop())

    registry = Registry()
    register(FLOW, build_noop, registry=registry, step_timeout=None, run_timeout=None)
    return registry


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median_ms": median(values),
        "p90_ms": _percentile(values, 0.90),
        "p99_ms": _percentile(values, 0.99),
        "max_ms": max(values) if values else float("nan"),
    }


async def _seed(store: Any, count: int, every: float, burst: bool) -> list[datetime]:
    """The schedules' rows, as the API writes them; their first ticks."""
    from sqlalchemy import insert

    from core.ids import uuid7
    from db.models import schedules

    now = await store.now()
    start = now + timedelta(seconds=LEAD)
    firsts = [
        start if burst else start + timedelta(seconds=i * every / count) for i in range(count)
    ]
    rows = [
        {
            "id": uuid7(),
            "tenant": TENANT,
            "name": f"bench-{i}",
            "flow": FLOW,
            "version": None,
            "cron": None,
            "every": every,
            "timezone": "UTC",
            "input": {},
            "enabled": True,
            "next_run_at": first,
            "created_at": now,
            "created_by": "bench",
            "updated_at": now,
        }
        for i, first in enumerate(firsts)
    ]
    for at in range(0, count, 250):
        async with store.sa.write() as conn:
            await conn.execute(insert(schedules), rows[at : at + 250])
    return firsts


def _due(firsts: list[datetime], every: float, end: datetime) -> int:
    step = timedelta(seconds=every)
    return sum(math.floor((end - f) / step) + 1 for f in firsts if f <= end)


async def one(url: str, dialect: str, case: str, args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import select

    from core.settings import Settings
    from db.models import runs
    from db.store import open_store
    from workers.scheduler import Scheduler

    registry = _registry()
    settings = Settings(database_url=url, schedule_poll=1.0)
    first_store = await open_migrated(url)
    stores = [first_store] + [open_store(url) for _ in range(case == "spread-x2")]
    handed, lost = Counter(), Counter()
    committed: list[tuple[str, str, float]] = []

    def scheduler_on(store: Any, n: int) -> Scheduler:
        async def hand_over(dispatches: list[Any]) -> None:
            handed[n] += len(dispatches)

        scheduler = Scheduler(store, registry, settings, hand_over)
        start = scheduler._start

        async def timed_start(schedule: Any, tick: datetime) -> tuple[uuid.UUID, bool]:
            run_id, created = await start(schedule, tick)
            if created:
                committed.append((str(schedule["id"]), tick.isoformat(), time.time()))
            else:
                lost[n] += 1
            return run_id, created

        scheduler._start = timed_start  # type: ignore[method-assign]
        return scheduler

    try:
        firsts = await _seed(first_store, args.schedules, args.every, case == "burst")
        schedulers = [scheduler_on(s, n) for n, s in enumerate(stores)]
        tasks = [asyncio.create_task(s.run()) for s in schedulers]
        window_end = firsts[0] + timedelta(seconds=args.seconds)
        # sleep until the window's end on the database's clock, then drain
        ahead = (window_end - await first_store.now()).total_seconds()
        await asyncio.sleep(max(ahead, 0.0) + DRAIN)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        query = select(runs.c.trigger, runs.c.created_at).where(runs.c.flow == FLOW)
        async with first_store.sa.read() as conn:
            rows = (await conn.execute(query)).all()
    finally:
        for store in stores:
            await store.close()

    per_tick: Counter[tuple[str, str]] = Counter()
    delays = []
    for trigger, created_at in rows:
        tick = datetime.fromisoformat(trigger["tick"])
        per_tick[(trigger["id"], trigger["tick"])] += 1
        if tick <= window_end:
            delays.append((created_at - tick).total_seconds() * 1000)
    commit_delays = [
        (at - datetime.fromisoformat(tick).timestamp()) * 1000
        for _, tick, at in committed
        if datetime.fromisoformat(tick) <= window_end
    ]
    due = _due(firsts, args.every, window_end)
    fired = len({k for k in per_tick if datetime.fromisoformat(k[1]) <= window_end})
    return {
        "database": dialect,
        "case": case,
        "schedulers": len(stores),
        "ticks_due": due,
        "ticks_fired": fired,
        "missed": due - fired,
        "duplicates": sum(1 for c in per_tick.values() if c > 1),
        "lost_races": sum(lost.values()),
        "handed_over": sum(handed.values()),
        "created_delay": _stats(delays),
        "committed_delay": _stats(commit_delays),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    first_line = __doc__.split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m bench.schedules", description=first_line)
    p.add_argument("--schedules", type=int, default=1000)
    p.add_argument("--every", type=float, default=10.0, help="seconds between a schedule's ticks")
    p.add_argument("--seconds", type=float, default=30.0, help="the measured window")
    p.add_argument("--only", choices=["sqlite", "postgresql"])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--output", default="schedules", help="results/<name>.json")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> None:
    args = parse(argv)
    payload: dict[str, Any] = {
        "benchmark": "schedules",
        "machine": machine(),
        "params": {**vars(args), "lead_s": LEAD, "drain_s": DRAIN, "schedule_poll": 1.0},
        "results": [],
    }
    dialects = [args.only] if args.only else ["sqlite", "postgresql"]
    for dialect in dialects:
        for case in args.cases:
            if dialect == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{Path(tmp) / 'schedules.db'}"
                    result = asyncio.run(one(url, dialect, case, args))
            else:
                with scratch_database("bench_schedules") as url:
                    result = asyncio.run(one(url, dialect, case, args))
            payload["results"].append(result)
            print(result, flush=True)
    payload["machine"]["loadavg_at_end"] = list(os.getloadavg())
    rows = [
        [
            f"{r['database']} {r['case']}",
            f"{r['ticks_fired']}/{r['ticks_due']}",
            r["duplicates"],
            r["lost_races"],
            r["created_delay"]["median_ms"],
            r["created_delay"]["p90_ms"],
            r["created_delay"]["p99_ms"],
            r["created_delay"]["max_ms"],
            r["committed_delay"]["median_ms"],
            r["committed_delay"]["p99_ms"],
        ]
        for r in payload["results"]
    ]
    header = ["case", "fired/due", "dup", "lost", "p50 ms", "p90", "p99", "max"]
    header += ["commit p50", "commit p99"]
    title = f"schedule firing delay, {args.schedules} schedules every {args.every:g} s"
    print(table(title, header, rows))
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
