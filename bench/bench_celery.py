"""pocketrun's Celery executor against raw Celery chains.

    .venv/bin/python -m bench.bench_celery [--latency-runs 20] [--runs 200]

Starts a private redis-server and a fresh PostgreSQL database (``POCKETRUN_TEST_PG``, the
suite's admin URL), then measures, with one and with two worker processes:

* per-step latency of a 10-node flow (median over sequential runs, end to end as the
  client sees it: submit -> terminal) through ``pocketrun worker``, against a raw Celery
  chain of 10 tasks passing the same state (Redis broker and result backend, no
  durability);
* throughput of ``--runs`` such runs submitted at once, against as many raw chains;
* pocketrun with a 10 ms time slice (the run goes back through the broker every few
  steps) and with one so short that every step does (the cost of a hop, which is why a
  worker carries a run on itself; the default slice, 5 s, carries a 10-node run in one
  task), and the database commit alone (the floor of a durable step).

Prints a table and writes bench/results/celery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery, chain
from pocketflow import Flow, Node

from bench.common import machine, median, save, table
from flows.registry import register

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STATE = {"n": 0, "payload": "x" * 200}

# ----------------------------------------------------------------------------------------
# the flow (workers import this module through POCKETRUN_FLOWS) and the raw Celery app


class Inc(Node):
    def post(self, shared, prep_res, exec_res):
        shared["n"] = shared.get("n", 0) + 1


def build_ten() -> Flow:
    first = node = Inc()
    for _ in range(9):
        node = node >> Inc()
    return Flow(start=first)


register("bench-ten", build_ten, description="ten quick nodes")

raw_app = Celery(
    "rawbench",
    broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
)
raw_app.conf.update(task_default_queue="rawbench", worker_hijack_root_logger=False)


@raw_app.task(name="rawbench.inc")
def raw_inc(state: dict[str, Any]) -> dict[str, Any]:
    state = dict(state)
    state["n"] += 1
    return state


@raw_app.task(name="rawbench.done")
def raw_done(state: dict[str, Any]) -> dict[str, Any]:
    import redis

    redis.Redis.from_url(raw_app.conf.broker_url).incr("rawbench:done")
    return state


def raw_chain(*, counted: bool = False):
    tail = [raw_done.s()] if counted else []
    return chain(raw_inc.s(STATE), *(raw_inc.s() for _ in range(9)), *tail)


# ----------------------------------------------------------------------------------------
# processes


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=open(log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        os.environ.get("POCKETRUN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------------------
# measurements


class PocketrunClient:
    """Creates runs as the API does (database row + broker message) and waits for them."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        from db.store import open_store
        from flows.registry import REGISTRY
        from workers.dispatch import Dispatcher, redis_client

        self.db = self.repo = open_store(database_url)
        self.redis = redis_client(redis_url, socket_timeout=None)
        self.dispatcher = Dispatcher(self.redis)
        self.spec = REGISTRY.get("bench-ten")

    async def create(self) -> uuid.UUID:
        from db.store import NewRun

        spec = self.spec
        row, _ = await self.repo.create(
            NewRun("bench", "bench", spec.name, spec.version, spec.graph_hash, "background",
                   spec.queue, 0, dict(STATE), {}, None)
        )  # fmt: skip
        await self.dispatcher.publish(row["id"], spec.queue, 0)
        return row["id"]

    async def wait_all(self, ids: set[uuid.UUID], pubsub) -> None:
        pending = set(ids)
        while pending:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            candidates = pending
            if message is not None:
                run_id = uuid.UUID(message["data"].decode())
                if run_id not in pending:
                    continue
                candidates = {run_id}
            for run_id in list(candidates):
                current = await self.repo.version(run_id)
                if current is not None and current[1] in ("succeeded", "failed"):
                    if current[1] != "succeeded":
                        row = await self.repo.get(run_id)
                        raise AssertionError(f"run {run_id} failed: {row['error'] if row else ''}")
                    pending.discard(run_id)

    async def latency(self, runs: int) -> float:
        from workers.redis_store import CHANGES_CHANNEL

        async with self.redis.pubsub() as pubsub:
            await pubsub.subscribe(CHANGES_CHANNEL)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                run_id = await self.create()
                await self.wait_all({run_id}, pubsub)
                times.append(time.perf_counter() - started)
        return median(times) / 10 * 1000

    async def throughput(self, runs: int) -> float:
        """Counted from the database every 5 ms, as the raw chains are counted from Redis:
        following 2,000 step notifications with a status read each would measure the client
        more than the workers (it shares the machine's two cores with them)."""
        from sqlalchemy import func, select

        from db.models import runs as runs_table
        from db.store import TERMINAL

        started = time.perf_counter()
        ids = [await self.create() for _ in range(runs)]
        query = (
            select(runs_table.c.status, func.count())
            .where(runs_table.c.id.in_(ids), runs_table.c.status.in_(TERMINAL))
            .group_by(runs_table.c.status)
        )
        deadline = time.monotonic() + 300
        while True:
            async with self.db.sa.read() as conn:
                counts = dict((await conn.execute(query)).all())
            if sum(counts.values()) >= runs:
                break
            assert time.monotonic() < deadline, f"runs did not finish: {counts}"
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        assert counts.get("succeeded") == runs, f"not every run succeeded: {counts}"
        return runs / elapsed

    async def commit_floor(self, steps: int = 200) -> float:
        """One checkpoint-sized transaction (UPDATE run + INSERT step), the durable floor."""
        from db.store import StepRecord
        from db.types import utcnow

        run_id = await self.create()
        await asyncio.sleep(0.5)  # let the workers finish it; we reuse the row
        checkpoints = self.db
        owner = "bench-floor"
        from sqlalchemy import delete, select, update

        from db.models import runs
        from db.models import steps as steps_table

        async with self.db.sa.write() as conn:
            cursor = (
                await conn.execute(
                    select(steps_table.c.cursor)
                    .where(steps_table.c.run_id == run_id, steps_table.c.cursor.is_not(None))
                    .limit(1)
                )
            ).scalar()
            await conn.execute(delete(steps_table).where(steps_table.c.run_id == run_id))
            await conn.execute(
                update(runs).where(runs.c.id == run_id).values(seq=0, lease_owner=owner)
            )
        started = time.perf_counter()
        for seq in range(steps):
            now = utcnow()
            # what the engine commits after a step in the middle of a run
            record = StepRecord(seq + 1, "Inc", "succeeded", 1, None, now, now, owner, None,
                                {"set": {"n": seq + 1}, "del": []}, cursor, "Inc")  # fmt: skip
            values = {"cursor": cursor, "current_node": "Inc"}
            await checkpoints.checkpoint(run_id, owner, seq, 15, record, values)
        return (time.perf_counter() - started) / steps * 1000

    async def close(self) -> None:
        await self.redis.aclose()
        await self.db.close()


def raw_latency(runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = raw_chain().apply_async()
        assert result.get(timeout=60)["n"] == 10
        times.append(time.perf_counter() - started)
    return median(times) / 10 * 1000


def raw_throughput(runs: int) -> float:
    """Counted by the chains' last task (a Redis INCR): waiting on 200 results through the
    result backend's pub/sub measures the client more than the workers."""
    import redis

    client = redis.Redis.from_url(raw_app.conf.broker_url)
    client.delete("rawbench:done")
    started = time.perf_counter()
    for _ in range(runs):
        raw_chain(counted=True).apply_async()
    deadline = time.monotonic() + 300
    while int(client.get("rawbench:done") or 0) < runs:
        assert time.monotonic() < deadline, "raw chains did not finish"
        time.sleep(0.005)
    return runs / (time.perf_counter() - started)


# ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    # Register the flow from this module's importable name, as the workers do (the graph
    # hash includes the node classes' module).
    __import__("bench.bench_celery")

    tmp = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    port = _free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    os.environ["BENCH_REDIS_URL"] = redis_url
    raw_app.conf.broker_url = raw_app.conf.result_backend = redis_url
    db_name = f"pocketrun_bench_{os.getpid()}"
    asyncio.run(_admin(f'CREATE DATABASE "{db_name}"'))
    base = os.environ.get("POCKETRUN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    database_url = base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + (
        f"/{db_name}"
    )
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    procs = Procs()
    env = {
        "POCKETRUN_DATABASE_URL": database_url,
        "POCKETRUN_EXAMPLES": "true",
        "POCKETRUN_REDIS_URL": redis_url,
        "POCKETRUN_EXECUTOR": "celery",
        "POCKETRUN_FLOWS": "bench.bench_celery",
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "BENCH_REDIS_URL": redis_url,
    }
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "rows": []}
    rows = []
    try:
        time.sleep(0.5)
        from db.migrate import upgrade
        from db.store import open_store

        async def migrate() -> None:
            db = open_store(database_url)
            await upgrade(db)
            await db.close()

        asyncio.run(migrate())

        def pocketrun(processes: int, label: str, extra: dict[str, str]) -> dict[str, Any]:
            procs.start(
                [str(BIN / "pocketrun"), "worker", "--concurrency", str(processes),
                 "--name", f"bench-{processes}"],
                {**env, **extra},
                tmp / f"pocketrun-{label}-{processes}.log",
            )  # fmt: skip
            time.sleep(4)  # the pool forks and connects

            async def measure() -> dict[str, Any]:
                client = PocketrunClient(database_url, redis_url)
                try:
                    await client.latency(3)  # warm up
                    latency = await client.latency(args.latency_runs)
                    throughput = await client.throughput(args.runs)
                    floor = await client.commit_floor() if processes == 1 and not extra else None
                finally:
                    await client.close()
                return {"latency_ms_per_step": latency, "runs_per_s": throughput, "floor": floor}

            measured = asyncio.run(measure())
            procs.stop_all()
            return measured

        def raw(processes: int) -> dict[str, Any]:
            procs.start(
                [str(BIN / "celery"), "-A", "bench.bench_celery:raw_app", "worker",
                 "--pool=prefork", f"--concurrency={processes}", "--loglevel=WARNING",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", "rawbench"],
                env,
                tmp / f"raw-{processes}.log",
            )  # fmt: skip
            time.sleep(4)
            raw_latency(3)
            measured = {
                "latency_ms_per_step": raw_latency(args.latency_runs),
                "runs_per_s": raw_throughput(args.runs),
            }
            procs.stop_all()
            return measured

        for processes in (1, 2):
            ours = pocketrun(processes, "default", {})
            theirs = raw(processes)
            # a 10 ms time slice: a run goes back through the broker every few steps
            sliced = pocketrun(processes, "slice", {"POCKETRUN_TIME_SLICE": "0.01"})
            hop = pocketrun(processes, "hop", {"POCKETRUN_TIME_SLICE": "0.000001"})
            entry = {"processes": processes, "pocketrun": ours, "raw": theirs,
                     "time_slice_10ms": sliced, "per_step_hop": hop}  # fmt: skip
            results["rows"].append(entry)
            rows.append([
                f"{processes} process(es)",
                ours["latency_ms_per_step"], theirs["latency_ms_per_step"],
                ours["latency_ms_per_step"] / theirs["latency_ms_per_step"],
                ours["runs_per_s"], theirs["runs_per_s"], ours["runs_per_s"] / theirs["runs_per_s"],
                sliced["latency_ms_per_step"], sliced["runs_per_s"],
                hop["latency_ms_per_step"], hop["runs_per_s"],
            ])  # fmt: skip
            if ours.get("floor") is not None:
                results["commit_floor_ms"] = ours["floor"]
        one, two = results["rows"]
        results["scaling_1_to_2"] = {
            "pocketrun": two["pocketrun"]["runs_per_s"] / one["pocketrun"]["runs_per_s"],
            "raw": two["raw"]["runs_per_s"] / one["raw"]["runs_per_s"],
        }
    finally:
        procs.stop_all()
        redis_proc.kill()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))

    print(
        table(
            f"10-node flow, pocketrun Celery executor vs raw Celery chain ({args.runs} runs)",
            [
                "workers",
                "ms/step",
                "raw ms/step",
                "ratio",
                "runs/s",
                "raw runs/s",
                "ratio",
                "10ms-slice ms/step",
                "runs/s",
                "hop ms/step",
                "hop runs/s",
            ],
            rows,
        )
    )
    print(f"durable commit alone (UPDATE run + INSERT step): {results['commit_floor_ms']:.2f} ms")
    scaling = results["scaling_1_to_2"]
    print(
        f"throughput 1 -> 2 processes: pocketrun x{scaling['pocketrun']:.2f}, "
        f"raw x{scaling['raw']:.2f}"
    )
    print(f"saved {save('celery', results)}")


if __name__ == "__main__":
    main()
