"""Durable control: resume-to-next-step latency, and what waiting runs cost the sweeper.

1. Resume latency. ``--resumes`` (200) runs of ``bench-ask`` (``bench/control_flows.py``:
   ``Ask``, an AskHuman, then ``Stamp``, whose exec notes ``time.time()``) are started and
   left ``waiting``; then each is resumed in turn (``POST /v1/runs/{id}/resume``, the next
   one once the previous run finished). The latency is Stamp's clock minus the client's
   clock just before the POST (one machine, one clock): the answer's HTTP call, the store
   update, the hand-off to the executor, the claim, Ask's post and its step's commit, up to
   the next step running. Embedded: one ``pocketrun serve`` (SQLite, local executor).
   Distributed: ``pocketrun serve`` with EXECUTOR=celery and a ``pocketrun worker``
   (PostgreSQL, a private redis-server). The floor is the raw driver doing the resume's
   database work on the same schema: one SELECT of the run's checkpoint and one UPDATE of
   its row (``sqlite3`` in WAL with ``synchronous=NORMAL``; ``asyncpg``, autocommit,
   prepared), once after each resume, so that both see the same machine.
2. Waiting runs at scale. On SQLite files and scratch PostgreSQL databases, one database
   per size: 1,000 and 100,000 runs of tenant ``t`` in status ``waiting`` (half of them
   with a timeout: a ``wake_at`` 30 days ahead), inserted directly into ``runs``, beside 10
   queued and 10 running runs; then, the sizes alternating over ``--rounds`` (5), the
   median of ``--repeat`` (50) calls of: one sweeper cycle
   (``due_timers(limit=500)`` + ``take_orphans(60, limit=500)``, and each alone), the
   tenant's list of waiting runs, its newest runs, and ``count_unfinished``. Aim: flat
   (the 100k/1k ratio near 1). The plans of the statements these calls send are kept.

    .venv/bin/python -m bench.control [--quick] [--skip-distributed] [--only sqlite|postgresql]
        [--try-index 'CREATE INDEX ...']
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy import event, insert

from bench.api import BIN, ROOT, Proc, free_port
from bench.common import machine, save, scratch_database, table
from core.ids import uuid7
from db.migrate import upgrade
from db.models import runs
from db.store import RunFilter, RunStore, open_store

FLOW = "bench-ask"
FLOWS = "bench.control_flows"
ANSWER = {"go": True}
REQUEST = {"prompt": "go?", "schema": {"type": "object"}}
WAITING_FOR = {"node": "Ask", "request": REQUEST}
CURSOR = {
    "v": 1,
    "frames": [],
    "next": "Ask",
    "last": None,
    "final": None,
    "done": False,
    "wait": WAITING_FOR,
}
GAP = 0.02  # seconds of quiet before each resume and each floor operation
PARTS = ("due_timers", "take_orphans")  # the sweeper cycle's two calls, also timed alone
OTHERS = 10  # queued runs and running runs, each, beside the waiting ones


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stats(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "median_ms": statistics.median(ms), "p99_ms": _percentile(ms, 0.99)}


# --- part 1: resume to next step ----------------------------------------------------------


def _start_waiting(client: httpx.Client, n: int) -> list[str]:
    """``n`` runs of the flow, once every one of them waits for its answer."""
    ids = []
    for _ in range(n):
        response = client.post(f"/v1/flows/{FLOW}/runs", json={"input": {}})
        if response.status_code not in (201, 202):
            raise RuntimeError(f"start: {response.status_code} {response.text[:300]}")
        ids.append(response.json()["id"])
    pending = set(ids)
    deadline = time.monotonic() + 180
    while pending:
        for run_id in list(pending):
            status = client.get(f"/v1/runs/{run_id}").json()["status"]
            if status == "waiting":
                pending.discard(run_id)
            elif status not in ("queued", "running"):
                raise RuntimeError(f"run {run_id} is {status} before its answer")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} runs never reached waiting")
        if pending:
            time.sleep(0.1)
    return ids


def _resume(client: httpx.Client, run_id: str) -> tuple[float, float]:
    """Resume one run and wait for it to end: (ms to its next step, ms of the POST)."""
    t0 = time.time()
    response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": ANSWER})
    posted = time.time()
    if response.status_code != 200:
        raise RuntimeError(f"resume: {response.status_code} {response.text[:300]}")
    run = response.json()
    deadline = time.monotonic() + 60
    while run["status"] != "succeeded":
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            raise RuntimeError(f"resumed run {run_id}: {run['status']} {run.get('error')}")
        run = client.get(f"/v1/runs/{run_id}?wait=30").json()
    return (run["output"]["stamped_at"] - t0) * 1000, (posted - t0) * 1000


def resume_latency(
    url: str, headers: dict[str, str], n: int, warmup: int, floor: Floor
) -> dict[str, Any]:
    """Resume the runs one at a time; after each, the floor does one resume's database work
    (interleaved, so that drift on the machine falls on both alike). A pause of ``GAP``
    before each lets the processes finish what a run's end leaves them (lease release,
    events) so that neither side pays for it."""
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        ids = _start_waiting(client, n + warmup)
        to_step, post, floor_ms = [], [], []
        for i, run_id in enumerate(ids):
            time.sleep(GAP)
            step_ms, post_ms = _resume(client, run_id)
            time.sleep(GAP)
            once = floor.once()
            if i >= warmup:
                to_step.append(step_ms)
                post.append(post_ms)
                floor_ms.append(once)
    hot = [floor.once() for _ in range(n)]  # the floor back to back, for reference
    return {
        "to_next_step": _stats(to_step),
        "post": _stats(post),  # the resume call, request to answer
        "after_post": _stats([a - b for a, b in zip(to_step, post, strict=True)]),
        "floor": _stats(floor_ms),
        "floor_back_to_back": _stats(hot),
        "samples_ms": to_step,
    }


def _env(database_url: str, key: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "POCKETRUN_DATABASE_URL": database_url,
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "POCKETRUN_FLOWS": FLOWS,
        "POCKETRUN_ADMIN_KEY": key,
        **extra,
    }


def embedded(tmp: Path, n: int, warmup: int) -> dict[str, Any]:
    key = "prk_" + secrets.token_urlsafe(32)
    env = _env(f"sqlite:///{tmp / 'embedded.db'}", key)
    floor = SqliteFloor(tmp / "floor.db", 2 * n + warmup)
    server = Proc("pocketrun serve", [str(BIN / "pocketrun"), "serve"], env, tmp / "emb.log")
    try:
        server.wait_up()
        return resume_latency(server.url, {"Authorization": f"Bearer {key}"}, n, warmup, floor)
    finally:
        server.stop()
        floor.close()


def distributed(tmp: Path, n: int, warmup: int) -> dict[str, Any]:
    with (
        scratch_database("pocketrun_bench_control") as database_url,
        scratch_database("pocketrun_bench_control_floor") as floor_url,
    ):
        port = free_port()
        key = "prk_" + secrets.token_urlsafe(32)
        env = _env(
            database_url,
            key,
            POCKETRUN_REDIS_URL=f"redis://127.0.0.1:{port}/0",
            POCKETRUN_EXECUTOR="celery",
        )
        floor = redis = worker = server = None
        try:
            floor = PostgresFloor(floor_url, 2 * n + warmup)
            redis = subprocess.Popen(
                ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            subprocess.run([str(BIN / "pocketrun"), "db", "upgrade"], cwd=ROOT, env=env, check=True)
            worker = subprocess.Popen(
                [str(BIN / "pocketrun"), "worker", "--concurrency", "2", "--name", "bench-ctl"],
                cwd=ROOT,
                env=env,
                stdout=open(tmp / "worker.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            server = Proc("pocketrun serve", [str(BIN / "pocketrun"), "serve"], env, tmp / "d.log")
            server.wait_up()
            time.sleep(4)  # the worker's pool forks and connects
            headers = {"Authorization": f"Bearer {key}"}
            return resume_latency(server.url, headers, n, warmup, floor)
        finally:
            if server is not None:
                server.stop()
            if worker is not None:
                os.killpg(worker.pid, 15)
                worker.wait(30)
            if redis is not None:
                redis.terminate()
                redis.wait(10)
            if floor is not None:
                floor.close()


# --- the floor: the resume's SELECT + UPDATE on the raw driver ----------------------------

FLOOR_SELECT = "SELECT status, version, cursor FROM runs WHERE id = {p1}"
FLOOR_UPDATE = (
    "UPDATE runs SET status = 'queued', cursor = {p1}, waiting_for = NULL, wake_at = NULL,"
    " deliveries = 0, dispatched_at = {p2}, version = version + 1"
    " WHERE id = {p3} AND status = 'waiting' AND version = {p4}"
)


def _answered(cursor: Any) -> str:
    data = orjson.loads(cursor) if isinstance(cursor, (str, bytes)) else cursor
    data["wait"] = {**data["wait"], "answer": ANSWER}
    return orjson.dumps(data).decode()


async def _prepared_store(url: str, n: int) -> None:
    store = open_store(url)
    try:
        await upgrade(store)
        await fill(store, n, datetime.now(UTC))
    finally:
        await store.close()


class Floor:
    """The raw driver doing one resume's database work per ``once()``, on pocketrun's own
    schema holding ``n`` waiting runs (one per call)."""

    def once(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteFloor(Floor):
    def __init__(self, path: Path, n: int) -> None:
        asyncio.run(_prepared_store(f"sqlite:///{path}", n))
        self.conn = sqlite3.connect(path, isolation_level=None)  # autocommit
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.select = FLOOR_SELECT.format(p1="?")
        self.update = FLOOR_UPDATE.format(p1="?", p2="?", p3="?", p4="?")
        self.ids = [r[0] for r in self.conn.execute("SELECT id FROM runs WHERE status = 'waiting'")]

    def once(self) -> float:
        run_id = self.ids.pop()
        began = time.perf_counter()
        status, version, cursor = self.conn.execute(self.select, (run_id,)).fetchone()
        now = datetime.now(UTC).isoformat()
        done = self.conn.execute(self.update, (_answered(cursor), now, run_id, version)).rowcount
        elapsed = (time.perf_counter() - began) * 1000
        assert status == "waiting" and done == 1
        return elapsed

    def close(self) -> None:
        self.conn.close()


class PostgresFloor(Floor):
    """asyncpg, one connection, autocommit, prepared statements, on a loop of its own."""

    def __init__(self, url: str, n: int) -> None:
        asyncio.run(_prepared_store(url, n))
        self.loop = asyncio.new_event_loop()
        self.conn, self.select, self.update, self.ids = self.loop.run_until_complete(
            self._connect(url)
        )

    @staticmethod
    async def _connect(url: str) -> tuple[Any, Any, Any, list[Any]]:
        conn = await asyncpg.connect(url)
        select = await conn.prepare(FLOOR_SELECT.format(p1="$1"))
        update = await conn.prepare(FLOOR_UPDATE.format(p1="$1", p2="now()", p3="$2", p4="$3"))
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM runs WHERE status = 'waiting'")]
        return conn, select, update, ids

    async def _once(self, run_id: Any) -> float:
        began = time.perf_counter()
        row = await self.select.fetchrow(run_id)
        await self.update.fetch(_answered(row["cursor"]), run_id, row["version"])
        elapsed = (time.perf_counter() - began) * 1000
        assert row["status"] == "waiting" and self.update.get_statusmsg() == "UPDATE 1"
        return elapsed

    def once(self) -> float:
        return self.loop.run_until_complete(self._once(self.ids.pop()))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


# --- part 2: waiting runs at scale --------------------------------------------------------


def _row(now: datetime, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": uuid7(),
        "tenant": "t",
        "principal": "bench",
        "flow": FLOW,
        "flow_version": "1",
        "graph_hash": "0" * 16,
        "status": status,
        "mode": "background",
        "queue": "default",
        "priority": 0,
        "input": {},
        "metadata": {},
        "created_at": now,
        "started_at": now,
        "seq": 0,
        "version": 3,
        "state_seq": 0,
        "deliveries": 1,
        "cancel_requested": False,
        "pause_requested": False,
        "retries": 0,
        "history_bytes": 0,
        "trigger": {"type": "api"},
        "current_node": "Ask",
        "cursor": CURSOR,
        "dispatched_at": now,
        "waiting_for": None,
        "wake_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        **extra,
    }


async def fill(store: RunStore, n: int, now: datetime, *, others: bool = True) -> None:
    """``n`` waiting runs (every other one with a timeout 30 days ahead); with ``others``,
    also the queued runs (just dispatched) and the running ones (holding live leases)."""
    later = now + timedelta(days=30)
    batch = []
    if others:
        batch += [_row(now, "queued") for _ in range(OTHERS)]
        batch += [
            _row(now, "running", lease_owner="bench", lease_expires_at=now + timedelta(days=1))
            for _ in range(OTHERS)
        ]
    for i in range(n):
        batch.append(
            _row(now, "waiting", waiting_for=WAITING_FOR, wake_at=later if i % 2 == 0 else None)
        )
        if len(batch) >= 5000:
            async with store.sa.write() as conn:
                await conn.execute(insert(runs), batch)
            batch = []
    if batch:
        async with store.sa.write() as conn:
            await conn.execute(insert(runs), batch)


async def _times(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    await fn()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def _cases(store: RunStore) -> dict[str, Callable[[], Awaitable[Any]]]:
    async def sweep() -> None:
        await store.due_timers(limit=500)
        await store.take_orphans(60, limit=500)

    return {
        "sweeper cycle": sweep,
        "due_timers": lambda: store.due_timers(limit=500),
        "take_orphans": lambda: store.take_orphans(60, limit=500),
        "list waiting (50)": lambda: store.list(
            RunFilter(tenant="t", statuses=["waiting"], limit=50)
        ),
        "list newest (50)": lambda: store.list(RunFilter(tenant="t", limit=50)),
        "count_unfinished": lambda: store.count_unfinished("t"),
    }


async def _plans(store: RunStore, cases: dict[str, Callable[[], Awaitable[Any]]]) -> dict:
    """What each case sends the database, and the database's plan for it."""
    seen: list[tuple[str, Any]] = []

    def hook(conn, cursor, statement, parameters, context, executemany) -> None:
        if " runs" in statement and (statement, parameters) not in seen:
            seen.append((statement, parameters))

    engines = {id(e.sync_engine): e.sync_engine for e in (store.sa.reader, store.sa.writer)}
    plans: dict[str, list[dict[str, Any]]] = {}
    prefix = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
    for name, fn in cases.items():
        if name == "sweeper cycle":
            continue
        seen.clear()
        for engine in engines.values():
            event.listen(engine, "before_cursor_execute", hook)
        try:
            await fn()
        finally:
            for engine in engines.values():
                event.remove(engine, "before_cursor_execute", hook)
        plans[name] = []
        for statement, parameters in seen:
            async with store.sa.read() as conn:
                rows = await conn.exec_driver_sql(prefix + statement, parameters)
                lines = [row[-1] for row in rows]
            plans[name].append({"sql": " ".join(statement.split()), "plan": lines})
    return plans


async def _prepare(url: str, size: int, extra_ddl: list[str]) -> tuple[RunStore, float]:
    store = open_store(url)
    began = time.perf_counter()
    await upgrade(store)
    for ddl in extra_ddl:  # --try-index: a candidate index, beside the schema's own
        async with store.sa.write() as conn:
            await conn.exec_driver_sql(ddl)
    await fill(store, size, datetime.now(UTC))
    if store.dialect == "postgresql":  # what autovacuum does after a bulk insert
        async with store.sa.write() as conn:
            await conn.exec_driver_sql("ANALYZE runs")
    return store, time.perf_counter() - began


async def _scale(
    urls: dict[int, str], repeat: int, rounds: int, extra_ddl: list[str]
) -> dict[str, Any]:
    """One database per size, measured in alternating rounds, so that drift on the machine
    falls on both sizes alike."""
    stores: dict[int, RunStore] = {}
    out: dict[str, Any] = {"sizes": {}, "extra_ddl": extra_ddl, "plans": {}}
    try:
        for size, url in urls.items():
            stores[size], fill_s = await _prepare(url, size, extra_ddl)
            out["sizes"][size] = {"fill_seconds": round(fill_s, 2)}
        sizes = sorted(stores)
        names = list(_cases(stores[sizes[0]]))
        samples = {size: {name: [] for name in names} for size in sizes}
        per_round: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for size in sizes if r % 2 == 0 else sizes[::-1]:
                for name, fn in _cases(stores[size]).items():
                    samples[size][name].append(await _times(fn, max(1, repeat // rounds)))
            for name in names:
                low, high = (statistics.median(samples[z][name][-1]) for z in (sizes[0], sizes[-1]))
                per_round[name].append(high / low)
        for size in sizes:
            out["sizes"][size]["median_ms"] = {
                name: statistics.median([x for chunk in samples[size][name] for x in chunk])
                for name in names
            }
            out["plans"][size] = await _plans(stores[size], _cases(stores[size]))
    finally:
        for store in stores.values():
            await store.close()
    small, large = out["sizes"][sizes[0]], out["sizes"][sizes[-1]]
    out["ratio"] = {name: large["median_ms"][name] / small["median_ms"][name] for name in names}
    out["ratio_per_round"] = per_round
    return out


def waiting_scale(
    dialect: str, tmp: Path, sizes: list[int], repeat: int, rounds: int, extra_ddl: list[str]
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if dialect == "sqlite":
            urls = {size: f"sqlite:///{tmp / f'scale-{size}.db'}" for size in sizes}
        else:
            urls = {
                size: stack.enter_context(scratch_database("pocketrun_bench_control_scale"))
                for size in sizes
            }
        return asyncio.run(_scale(urls, repeat, rounds, extra_ddl))


# --- report -------------------------------------------------------------------------------


def _access(plan: list[str]) -> str:
    """How a plan reaches the rows: its scans and sorts, without the costs."""
    keep = ("SCAN", "SEARCH", "TEMP B-TREE", "Scan", "Sort", "Index Cond", "Filter")
    lines = [re.sub(r"\s+\(cost=[^)]*\)", "", line).strip() for line in plan]
    return "; ".join(line for line in lines if any(k in line for k in keep))


def report(payload: dict[str, Any]) -> str:
    out = []
    rows = []
    shapes = (("embedded", "sqlite"), ("distributed", "postgresql"))
    for shape, dialect in shapes:
        if shape not in payload["resume"]:
            continue
        got = payload["resume"][shape]
        floor = got["floor"]
        step = got["to_next_step"]
        rows.append(
            [
                f"{shape} ({dialect})",
                step["n"],
                round(step["median_ms"], 2),
                round(step["p99_ms"], 2),
                round(got["post"]["median_ms"], 2),
                round(got["after_post"]["median_ms"], 2),
                round(floor["median_ms"], 3),
                round(floor["p99_ms"], 3),
                f"{step['median_ms'] / floor['median_ms']:.1f}x",
                f"{step['p99_ms'] / floor['p99_ms']:.1f}x",
                round(got["floor_back_to_back"]["median_ms"], 3),
            ]
        )
    if rows:
        out.append(
            table(
                "resume to next step (POST /resume -> Stamp's exec), ms; floor: the raw "
                "driver's SELECT + UPDATE of a run's row, interleaved (b2b: back to back)",
                [
                    "shape",
                    "n",
                    "median",
                    "p99",
                    "POST median",
                    "after POST median",
                    "floor median",
                    "floor p99",
                    "median/floor",
                    "p99/floor",
                    "floor b2b median",
                ],
                rows,
            )
        )
    for dialect, got in payload["scale"].items():
        sizes = sorted(got["sizes"], key=int)
        small, large = sizes[0], sizes[-1]
        out.append(
            table(
                f"waiting runs, {dialect}: median ms of {payload['params']['repeat']} calls in "
                f"{payload['params']['rounds']} rounds, the sizes alternating",
                [
                    "call",
                    f"{int(small):,} waiting",
                    f"{int(large):,} waiting",
                    "ratio",
                    "per round",
                ],
                [
                    [
                        f"  {name}" if name in PARTS else name,
                        round(got["sizes"][small]["median_ms"][name], 3),
                        round(got["sizes"][large]["median_ms"][name], 3),
                        f"{got['ratio'][name]:.2f}x",
                        "{:.2f}-{:.2f}x".format(
                            min(got["ratio_per_round"][name]), max(got["ratio_per_round"][name])
                        ),
                    ]
                    for name in got["sizes"][small]["median_ms"]
                ],
            )
        )
        for name, statements in got["plans"][large].items():
            for statement in statements:
                out.append(f"  plan at {int(large):,}, {name}: {_access(statement['plan'])}")
    return "\n".join(out)


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 resumes, 10 calls per query")
    parser.add_argument("--resumes", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=50, help="calls per query and size")
    parser.add_argument("--rounds", type=int, default=5, help="the sizes alternate in rounds")
    parser.add_argument("--sizes", default="1000,100000", help="waiting runs, comma-separated")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--skip-distributed", action="store_true")
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument(
        "--try-index",
        action="append",
        default=[],
        metavar="DDL",
        help="run this CREATE INDEX on the scale databases after the migrations (repeatable; "
        "results then go to control-tried.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.resumes, args.warmup, args.repeat = 50, 5, 10
    sizes = sorted(int(s) for s in args.sizes.split(","))
    dialects = [args.only] if args.only else ["sqlite", "postgresql"]
    payload: dict[str, Any] = {
        "machine": machine(),
        "params": {
            "resumes": args.resumes,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "rounds": args.rounds,
            "sizes": sizes,
            "others": {"queued": OTHERS, "running": OTHERS},
            "quick": args.quick,
        },
        "resume": {},
        "scale": {},
    }
    with tempfile.TemporaryDirectory(prefix="pocketrun-bench-control-") as name:
        tmp = Path(name)
        if not args.skip_resume:
            if "sqlite" in dialects:
                payload["resume"]["embedded"] = embedded(tmp, args.resumes, args.warmup)
            if "postgresql" in dialects and not args.skip_distributed:
                payload["resume"]["distributed"] = distributed(tmp, args.resumes, args.warmup)
        if not args.skip_scale:
            for dialect in dialects:
                payload["scale"][dialect] = waiting_scale(
                    dialect, tmp, sizes, args.repeat, args.rounds, args.try_index
                )
    print(report(payload))
    name = "control-tried" if args.try_index else "control-quick" if args.quick else "control"
    print("saved", save(name, payload))


if __name__ == "__main__":
    run()
