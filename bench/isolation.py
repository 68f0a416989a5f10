"""Isolation under hostile load, on a real ``pocketrun serve`` (embedded default or PostgreSQL).

1. A victim tenant's submit-to-finish times, alone and while another tenant floods: the
   flooder keeps 50 inline runs and a stream of background runs going (as many as its
   unfinished-run limit lets in; its 429s are counted), the victim submits one-node
   ``hello`` runs one after another with ``?wait``, 20 a second at most. Reported:
   p50/p99 as the victim's client sees them (request to finished answer) and as the
   database records them
   (created_at to finished_at), and the loaded/unloaded p99 ratio (aim: within 2x).
2. Memory: the server's resident set before and at its peak (VmHWM) while 200 clients
   read a 10,000-step run's steps at once, each paging through all of it.

    .venv/bin/python -m bench.isolation [--dialect sqlite|postgresql] [--victim-runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.api import BIN, ROOT, Proc
from bench.common import machine, save, scratch_database, table

FLOWS = "tests.edge_flows,tests.hostile_flows"
VICTIM_EVERY = 0.05  # the victim submits at most 20 runs a second


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _key(env: dict[str, str], role: str, tenant: str) -> str:
    out = subprocess.run(
        [str(BIN / "pocketrun"), "keys", "create", "--role", role, "--tenant", tenant],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def _reset_peak(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def victim_times(url: str, key: str, runs: int) -> dict[str, list[float]]:
    client_ms, db_ms = [], []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for i in range(runs):
            began = time.perf_counter()
            response = c.post("/v1/flows/hello/runs?wait=30", json={"input": {"name": f"v{i}"}})
            elapsed = (time.perf_counter() - began) * 1000
            run = response.json()
            if response.status_code != 201 or run["status"] != "succeeded":
                raise RuntimeError(f"victim run: {response.status_code} {response.text[:300]}")
            client_ms.append(elapsed)
            time.sleep(max(0.0, VICTIM_EVERY - elapsed / 1000))
            db_ms.append(
                (_moment(run["finished_at"]) - _moment(run["created_at"])).total_seconds() * 1000
            )
    return {"client": client_ms, "db": db_ms}


class Flood:
    """50 looping inline callers and 16 looping background submitters of one tenant."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.counts = {"accepted": 0, "429": 0, "5xx": 0, "other": 0}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _count(self, status: int) -> None:
        name = "accepted" if status in (201, 202) else "429" if status == 429 else None
        name = name or ("5xx" if status >= 500 else "other")
        with self._lock:
            self.counts[name] += 1

    def _loop(self, body: dict[str, Any], params: str) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    status = client.post(f"/v1/flows/nap/runs{params}", json=body).status_code
                except httpx.HTTPError:
                    status = 599
                self._count(status)
                if status == 429:
                    time.sleep(0.05)

    def start(self) -> None:
        inline = ({"input": {"seconds": 0.2}, "mode": "inline"}, "?wait=30")
        background = ({"input": {"seconds": 0.05}}, "")
        for args in [inline] * 50 + [background] * 16:
            thread = threading.Thread(target=self._loop, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(70)


async def read_steps(url: str, key: str, run_id: str, readers: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=readers, max_keepalive_connections=readers)
    statuses: dict[int, int] = {}  # 0: retried after the server closed an idle connection
    largest = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as c:

        async def reader() -> None:
            nonlocal largest
            cursor = None
            while True:
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                try:
                    response = await c.get(f"/v1/runs/{run_id}/steps", params=params)
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    # a kept-alive connection the server closed as this client, busy with
                    # 199 others, came back to it late: not the server's answer; retry
                    statuses[0] = statuses.get(0, 0) + 1
                    continue
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                largest = max(largest, len(response.content))
                if response.status_code != 200:
                    return
                cursor = response.json()["next_cursor"]
                if cursor is None:
                    return

        began = time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(readers)))
        seconds = time.perf_counter() - began
    return {"statuses": statuses, "largest_page_bytes": largest, "seconds": seconds}


@contextlib.contextmanager
def database(dialect: str, tmp: Path) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{tmp / 'pocketrun.db'}"
    else:
        with scratch_database("pocketrun_bench_iso") as url:
            yield url


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp_name = stack.enter_context(tempfile.TemporaryDirectory(prefix="pocketrun-bench-iso-"))
        tmp = Path(tmp_name)
        url = stack.enter_context(database(args.dialect, tmp))
        env = {
            **os.environ,
            "POCKETRUN_DATABASE_URL": url,
            "POCKETRUN_EXAMPLES": "true",
            "POCKETRUN_LOG_LEVEL": "WARNING",
            "POCKETRUN_FLOWS": FLOWS,
            **({"POCKETRUN_RATE_LIMIT": args.rate_limit} if args.rate_limit else {}),
        }
        subprocess.run(
            [str(BIN / "pocketrun"), "db", "upgrade"], cwd=ROOT, env=env, check=True, timeout=120
        )
        flooder, victim = _key(env, "consumer", "flood"), _key(env, "consumer", "victim")
        server = Proc("pocketrun serve", [str(BIN / "pocketrun"), "serve"], env, tmp / "s.log")
        try:
            server.wait_up()
            victim_times(server.url, victim, 10)  # warm up
            alone = victim_times(server.url, victim, args.victim_runs)
            flood = Flood(server.url, flooder)
            flood.start()
            time.sleep(3)  # the flood reaches its steady state
            loaded = victim_times(server.url, victim, args.victim_runs)
            flood.join()
            print("flood requests:", flood.counts, flush=True)

            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {victim}"}, timeout=60
            ) as c:
                run = c.post(
                    "/v1/flows/long/runs", json={"input": {"steps": 10_000, "delay": 0}}
                ).json()
                deadline = time.monotonic() + 600
                while c.get(f"/v1/runs/{run['id']}").json()["status"] != "succeeded":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the 10,000-step run did not finish")
                    time.sleep(0.5)
            pid = server.proc.pid
            before = _rss_kb(pid, "VmRSS")
            _reset_peak(pid)
            reads = asyncio.run(read_steps(server.url, victim, run["id"], 200))
            peak = _rss_kb(pid, "VmHWM")
        finally:
            server.stop()

    def stats(times: dict[str, list[float]]) -> dict[str, float]:
        return {
            f"{side}_{name}": round(_percentile(values, q), 1)
            for side, values in times.items()
            for name, q in (("p50", 0.5), ("p99", 0.99))
        }

    return {
        "machine": machine(),
        "dialect": args.dialect,
        "rate_limit": args.rate_limit,
        "victim_runs": args.victim_runs,
        "alone_ms": stats(alone),
        "flooded_ms": stats(loaded),
        "flood_requests": flood.counts,
        "steps_reads": {**reads, "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024},
    }


def report(payload: dict[str, Any]) -> str:
    alone, flooded = payload["alone_ms"], payload["flooded_ms"]
    rows = []
    for side in ("client", "db"):
        a99, f99 = alone[f"{side}_p99"], flooded[f"{side}_p99"]
        rows.append(
            [
                "request to answer" if side == "client" else "created to finished",
                alone[f"{side}_p50"],
                a99,
                flooded[f"{side}_p50"],
                f99,
                f"{f99 / a99:.2f}x",
            ]
        )
    out = table(
        f"victim tenant, hello runs ({payload['dialect']}, rate limit "
        f"{payload['rate_limit'] or 'none'}), ms",
        ["measure", "alone p50", "alone p99", "flooded p50", "flooded p99", "p99 ratio"],
        rows,
    )
    reads = payload["steps_reads"]
    out += "\n" + table(
        "200 concurrent readers of a 10,000-step run's steps (pages of 1,000)",
        ["rss before MB", "rss peak MB", "largest page KB", "seconds", "statuses"],
        [
            [
                round(reads["rss_before_mb"], 1),
                round(reads["rss_peak_mb"], 1),
                round(reads["largest_page_bytes"] / 1024, 1),
                round(reads["seconds"], 2),
                reads["statuses"],
            ]
        ],
    )
    return out


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialect", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--victim-runs", type=int, default=100)
    parser.add_argument("--rate-limit", help="POCKETRUN_RATE_LIMIT for the server, e.g. 50/second")
    args = parser.parse_args(argv)
    payload = bench(args)
    print(report(payload))
    suffix = "-ratelimited" if args.rate_limit else ""
    print("saved", save(f"isolation-{args.dialect}{suffix}", payload))


if __name__ == "__main__":
    run()
