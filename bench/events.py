"""The event stream: latency from ``emit`` to a subscriber, and what subscribers cost steps.

1. Latency: a node emits its clock (``time.time()``) 400 times, 5 ms apart; one SSE
   subscriber on ``GET /v1/runs/{id}/events`` takes each chunk's arrival time minus its
   clock (one machine, one clock). Embedded: one ``pocketrun serve`` (SQLite). Distributed:
   a ``pocketrun worker`` runs the node and publishes to Redis; the subscriber reads from a
   ``pocketrun serve`` with EXECUTOR=celery (PostgreSQL, a private redis-server).
2. Cost on durable steps: one run of a 2 s nap (while the subscribers connect), then
   10,000 steps of the peer workload's node (read ``counter``, write ``counter + 1`` and a
   fresh 1 KB ``payload``), embedded, with 0, 1 and 100 subscribers following its stream;
   the per-step latency is the database times (first tick started to run finished) over
   the ticks. Ratios against 0 subscribers in the same
   run of the bench (the floor and peers per step are bench.peers').

    .venv/bin/python -m bench.events [--skip-distributed]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from pocketflow import Flow, Node

from bench.api import BIN, ROOT, Proc, free_port
from bench.common import machine, save, scratch_database, table
from core.context import emit
from flows.registry import register
from nodes.control import Sleep

CHUNKS, GAP = 400, 0.005
STEPS = 10_000


class Clock(Node):
    def exec(self, prep_res):
        for _ in range(CHUNKS):
            emit(time.time())
            time.sleep(GAP)


class Tick(Node):
    def prep(self, shared):
        return shared.get("counter", 0)

    def exec(self, counter):
        return counter + 1

    def post(self, shared, prep_res, exec_res):
        shared["counter"] = exec_res
        shared["payload"] = os.urandom(512).hex()
        return "again" if exec_res < shared.get("steps", STEPS) else "done"


def clock_flow() -> Flow:
    return Flow(start=Clock())


def ticks_flow() -> Flow:
    """A nap while the subscribers connect, then the ticks."""
    nap, tick = Sleep(), Tick()
    nap >> tick
    tick - "again" >> tick
    return Flow(start=nap)


register("bench-clock", clock_flow, mode="background", step_timeout=120)
register("bench-ticks", ticks_flow, mode="background", max_steps=100_000, run_timeout=None)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def follow(url: str, headers: dict[str, str], run_id: str, clocks: list[float]) -> None:
    """Read the run's stream to its end; for each chunk, its delay since it was emitted."""
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client,
        client.stream("GET", f"/v1/runs/{run_id}/events") as response,
    ):
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
                if kind == "run.finished":
                    return
            elif line.startswith("data: ") and kind == "node.output":
                clocks.append(time.time() - orjson.loads(line[6:])["chunk"])


def emit_latency(url: str, headers: dict[str, str]) -> dict[str, float]:
    run = httpx.post(f"{url}/v1/flows/bench-clock/runs", json={}, headers=headers).json()
    delays: list[float] = []
    asyncio.run(follow(url, headers, run["id"], delays))
    live = delays[5:]  # the first chunks may come from the record, read as it connected
    ms = [d * 1000 for d in live]
    return {"chunks": len(ms), "p50_ms": statistics.median(ms), "p99_ms": _percentile(ms, 0.99)}


def step_cost(url: str, headers: dict[str, str], subscribers: int) -> float:
    """Milliseconds per step of a 10,000-step run followed by ``subscribers`` streams."""
    body = {"input": {"steps": STEPS, "seconds": 2}}
    run = httpx.post(f"{url}/v1/flows/bench-ticks/runs", json=body, headers=headers).json()

    async def everyone() -> None:
        await asyncio.gather(
            *(drain(url, headers, run["id"]) for _ in range(subscribers)),
            _until_finished(url, headers, run["id"]),
        )

    asyncio.run(everyone())
    done = httpx.get(f"{url}/v1/runs/{run['id']}", headers=headers).json()
    assert done["status"] == "succeeded", done
    steps = httpx.get(f"{url}/v1/runs/{run['id']}/steps?limit=2", headers=headers).json()
    first_tick = _moment(steps["items"][1]["started_at"])  # after the nap
    seconds = (_moment(done["finished_at"]) - first_tick).total_seconds()
    return seconds * 1000 / (done["steps"] - 1)


async def drain(url: str, headers: dict[str, str], run_id: str) -> None:
    """Read the run's stream to its end as bytes: a subscriber that costs this machine
    (which also runs the server) as little as a subscriber can."""
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client,
        client.stream("GET", f"/v1/runs/{run_id}/events") as response,
    ):
        tail = b""
        async for raw in response.aiter_raw():
            tail = tail[-40:] + raw
            if b"event: run.finished" in tail:
                return


async def _until_finished(url: str, headers: dict[str, str], run_id: str) -> None:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        while (await client.get(f"/v1/runs/{run_id}?wait=30")).json()["status"] != "succeeded":
            pass


def embedded(tmp: Path, rounds: int) -> dict[str, Any]:
    key = "prk_" + secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": f"sqlite:///{tmp / 'embedded.db'}",
        "POCKETRUN_EXAMPLES": "true",
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "POCKETRUN_FLOWS": "bench.events",
        "POCKETRUN_ADMIN_KEY": key,
    }
    headers = {"Authorization": f"Bearer {key}"}
    server = Proc("pocketrun serve", [str(BIN / "pocketrun"), "serve"], env, tmp / "emb.log")
    try:
        server.wait_up()
        latency = emit_latency(server.url, headers)
        costs: dict[int, list[float]] = {0: [], 1: [], 100: []}
        for _ in range(rounds):
            for n in costs:
                costs[n].append(step_cost(server.url, headers, n))
    finally:
        server.stop()
    return {"latency": latency, "step_ms": {n: statistics.median(v) for n, v in costs.items()}}


def distributed(tmp: Path) -> dict[str, Any]:
    with scratch_database("pocketrun_bench_events") as database_url:
        return _distributed(tmp, database_url)


def _distributed(tmp: Path, database_url: str) -> dict[str, Any]:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    key = "prk_" + secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": database_url,
        "POCKETRUN_EXAMPLES": "true",
        "POCKETRUN_REDIS_URL": redis_url,
        "POCKETRUN_EXECUTOR": "celery",
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "POCKETRUN_FLOWS": "bench.events",
        "POCKETRUN_ADMIN_KEY": key,
    }
    headers = {"Authorization": f"Bearer {key}"}
    subprocess.run([str(BIN / "pocketrun"), "db", "upgrade"], cwd=ROOT, env=env, check=True)
    worker = subprocess.Popen(
        [str(BIN / "pocketrun"), "worker", "--concurrency", "1", "--name", "bench-events"],
        cwd=ROOT,
        env=env,
        stdout=open(tmp / "worker.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Proc("pocketrun serve", [str(BIN / "pocketrun"), "serve"], env, tmp / "dist.log")
    try:
        server.wait_up()
        time.sleep(4)  # the worker's pool forks and connects
        return {"latency": emit_latency(server.url, headers)}
    finally:
        server.stop()
        os.killpg(worker.pid, 15)
        worker.wait(30)
        redis.terminate()
        redis.wait(10)


def report(payload: dict[str, Any]) -> str:
    rows = []
    for mode in ("embedded", "distributed"):
        if mode in payload:
            lat = payload[mode]["latency"]
            rows.append([mode, lat["chunks"], round(lat["p50_ms"], 2), round(lat["p99_ms"], 2)])
    out = table("emit() to subscriber", ["mode", "chunks", "p50 ms", "p99 ms"], rows)
    steps = payload["embedded"]["step_ms"]
    base = steps[0]
    out += "\n" + table(
        f"durable steps ({STEPS:,} per run, embedded SQLite) with subscribers",
        ["subscribers", "ms per step", "vs none"],
        [[n, round(ms, 4), f"{ms / base:.3f}x"] for n, ms in steps.items()],
    )
    return out


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-distributed", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    payload: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="pocketrun-bench-events-") as name:
        tmp = Path(name)
        payload["embedded"] = embedded(tmp, args.rounds)
        if not args.skip_distributed:
            payload["distributed"] = distributed(tmp)
    print(report(payload))
    print("saved", save("events", payload))


if __name__ == "__main__":
    run()
