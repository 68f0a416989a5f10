"""Dispatch fairness: how long tenant B's next run waits while tenant A has 10,000 queued.

Tenant A submits ``--flood`` runs of a one-node flow that sleeps ``--nap`` seconds (its
run's slot), then tenant B submits one ``hello`` run every second, ``--probes`` times,
while A's backlog is still there. B's wait is its run's ``started_at - created_at`` as
the database records it. Shapes, each on this machine:

- pocketrun, local executor on SQLite (``pocketrun serve``, CONCURRENCY 8);
- pocketrun on PostgreSQL with one Celery worker of ``--worker-slots`` processes;
- the peer: raw Celery on the same Redis broker and worker size, A's tasks queued
  first, B's task sent after them (FIFO: B waits for the whole backlog).

``TENANT_CONCURRENCY`` is the worker's slots in the Celery shape, so a tenant's runs in
flight fill the workers and no more; B's wait is then one A run's slot at most.

    .venv/bin/python -m bench.fairness [--flood 10000] [--probes 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from bench.api import BIN, ROOT, Proc
from bench.bench_celery import Procs, _free_port
from bench.common import machine, save, scratch_database, table
from bench.isolation import _key, _percentile

FLOWS = "tests.edge_flows,tests.hostile_flows"

raw_app = Celery("rawfair", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
raw_app.conf.update(task_default_queue="rawfair", worker_hijack_root_logger=False)


@raw_app.task(name="rawfair.nap")
def raw_nap(seconds: float) -> None:
    time.sleep(seconds)


@raw_app.task(name="rawfair.probe")
def raw_probe(sent: float) -> None:
    redis.Redis.from_url(raw_app.conf.broker_url).rpush("rawfair:waits", time.time() - sent)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _flood(url: str, key: str, count: int, nap: float) -> float:
    """Submit ``count`` runs as fast as 8 clients can; the seconds it took."""
    began = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:

        def start(_: int) -> None:
            response = c.post("/v1/flows/nap/runs", json={"input": {"seconds": nap}})
            response.raise_for_status()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(start, range(count)))
    return time.perf_counter() - began


def _probe(url: str, key: str, probes: int) -> list[float]:
    waits = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90) as c:
        for _ in range(probes):
            run = c.post("/v1/flows/hello/runs?wait=60", json={"input": {"name": "b"}}).json()
            if run["status"] != "succeeded":
                raise RuntimeError(f"B's run did not finish in 60 s: {run['status']}")
            waits.append((_moment(run["started_at"]) - _moment(run["created_at"])).total_seconds())
            time.sleep(1)
    return waits


def _backlog(url: str, admin: str) -> int:
    headers = {"Authorization": f"Bearer {admin}"}
    found = httpx.get(f"{url}/v1/tenants/a/limits", headers=headers, timeout=30).json()
    return found["in_flight"] + found["held"]


def pocketrun(shape: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        env = {
            **os.environ,
            "POCKETRUN_EXAMPLES": "true",
            "POCKETRUN_LOG_LEVEL": "WARNING",
            "POCKETRUN_FLOWS": FLOWS,
            "POCKETRUN_TENANT_MAX_UNFINISHED": str(args.flood + 100),
        }
        procs = Procs()
        stack.callback(procs.stop_all)
        if shape == "local":
            env["POCKETRUN_DATABASE_URL"] = f"sqlite:///{tmp / 'fair.db'}"
        else:
            port = _free_port()
            redis_proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            stack.callback(redis_proc.wait, 10)
            stack.callback(redis_proc.terminate)
            env |= {
                "POCKETRUN_DATABASE_URL": stack.enter_context(scratch_database("pocketrun_fair")),
                "POCKETRUN_EXECUTOR": "celery",
                "POCKETRUN_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "POCKETRUN_TENANT_CONCURRENCY": str(args.worker_slots),
            }
        subprocess.run([str(BIN / "pocketrun"), "db", "upgrade"], cwd=ROOT, env=env, check=True)
        a, b = _key(env, "consumer", "a"), _key(env, "consumer", "b")
        admin = _key(env, "admin", "*")
        if shape == "celery":
            procs.start(
                [str(BIN / "pocketrun"), "worker", "--concurrency", str(args.worker_slots)],
                env,
                tmp / "worker.log",
            )
        server = Proc("pocketrun serve", [str(BIN / "pocketrun"), "serve"], env, tmp / "s.log")
        stack.callback(server.stop)
        server.wait_up()
        time.sleep(3)  # the worker's pool forks and connects
        _probe(server.url, b, 1)  # warm up
        flood_seconds = _flood(server.url, a, args.flood, args.nap)
        backlog_before = _backlog(server.url, admin)
        waits = _probe(server.url, b, args.probes)
        backlog_after = _backlog(server.url, admin)
    return {
        "shape": shape,
        "flood_submit_s": round(flood_seconds, 1),
        "a_backlog_before": backlog_before,
        "a_backlog_after": backlog_after,
        "b_wait_s": waits,
    }


def raw_celery(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    raw_app.conf.broker_url = url
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    procs = Procs()
    try:
        time.sleep(0.5)
        procs.start(
            [str(BIN / "celery"), "-A", "bench.fairness:raw_app", "worker", "--pool=prefork",
             f"--concurrency={args.worker_slots}", "--loglevel=WARNING", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-Q", "rawfair"],
            {"BENCH_REDIS_URL": url},
            tmp / "raw.log",
        )  # fmt: skip
        time.sleep(4)
        began = time.perf_counter()
        for _ in range(args.flood):
            raw_nap.apply_async((args.nap,))
        flood_seconds = time.perf_counter() - began
        client = redis.Redis.from_url(url)
        for _ in range(args.probes):
            raw_probe.apply_async((time.time(),))
            time.sleep(1)
        deadline = time.monotonic() + args.flood * args.nap * 2 + 120
        while client.llen("rawfair:waits") < args.probes and time.monotonic() < deadline:
            time.sleep(0.5)
        waits = [float(w) for w in client.lrange("rawfair:waits", 0, -1)]
    finally:
        procs.stop_all()
        redis_proc.terminate()
        redis_proc.wait(10)
    return {
        "shape": "raw Celery (FIFO)",
        "flood_submit_s": round(flood_seconds, 1),
        "a_backlog_before": args.flood,
        "a_backlog_after": None,
        "b_wait_s": waits,
    }


def report(payload: dict[str, Any]) -> str:
    nap = payload["args"]["nap"]
    rows = []
    for found in payload["shapes"]:
        waits = found["b_wait_s"]
        rows.append(
            [
                found["shape"],
                found["a_backlog_before"],
                found["a_backlog_after"] if found["a_backlog_after"] is not None else "-",
                round(_percentile(waits, 0.5), 3) if waits else "-",
                round(max(waits), 3) if waits else "-",
                round(_percentile(waits, 0.5) / nap, 1) if waits else "-",
            ]
        )
    return table(
        f"B's wait while A has {payload['args']['flood']:,} queued (A's run: {nap * 1000:g} ms)",
        ["shape", "A backlog at B's first", "at B's last", "B wait p50 s", "max s", "p50 / A run"],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--nap", type=float, default=0.05)
    parser.add_argument("--worker-slots", type=int, default=4)
    parser.add_argument("--shapes", default="local,celery,raw")
    args = parser.parse_args(argv)
    shapes = []
    with tempfile.TemporaryDirectory(prefix="pocketrun-bench-fair-") as name:
        tmp = Path(name)
        for shape in args.shapes.split(","):
            found = raw_celery(args, tmp) if shape == "raw" else pocketrun(shape, args, tmp)
            print(found, flush=True)
            shapes.append(found)
    payload = {"machine": machine(), "args": vars(args), "shapes": shapes}
    save("fairness", payload)
    print(report(payload))


if __name__ == "__main__":
    main()
