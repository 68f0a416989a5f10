"""Inline runs over HTTP: ``pocketrun serve`` against ``langgraph dev``, same workload.

Starts ONE ``pocketrun serve`` (SQLite file in a temp dir, an admin key, the flows of
``bench.peer_flows``: ``bench10``, the 10-node workload of DESIGN.md section 7 as an inline
flow) and drives ``--runs`` calls of ``POST /v1/flows/bench10/runs?wait=30`` with
``{"input": {"counter": 0}}``, ``--concurrency`` at a time, checking each answer is a 201
with status ``succeeded`` and counter 10. Then ``langgraph dev`` (langgraph-cli[inmem],
in-memory runtime, no auth) serving the same graph (``bench/peer_flows.py:graph``), driven
the same way through its documented start-and-wait call on a fresh thread,
``POST /threads/{new uuid}/runs/wait`` with ``{"assistant_id": "bench10", "input":
{"counter": 0}, "durability": "sync", "if_not_exists": "create"}`` (one call: the thread
is created by it; answered with the run's final state, checked for counter 10).

Measured per server: runs/s, client latency (median, p90), and the server's CPU time per
run (utime + stime of the server process and its descendants, all threads, from
``/proc/<pid>/stat``, before and after the calls).

``langgraph dev`` runs from a virtualenv of its own: every langgraph-api release pins
``structlog<26``, and pocketrun's virtualenv has structlog 26, so it cannot be installed
beside pocketrun without moving a product dependency. The first run creates that
virtualenv (``--langgraph-venv``, pinned versions below) with pip; ``--no-install``
refuses instead, ``--skip-langgraph`` leaves that side out.

    .venv/bin/python -m bench.http_inline [--runs 500] [--concurrency 16] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine, median, save, table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLOW = "bench10"
TICK = os.sysconf("SC_CLK_TCK")

# The langgraph-dev side: its own virtualenv (see the module docstring), these versions.
LANGGRAPH_VENV = Path(
    os.environ.get(
        "POCKETRUN_BENCH_LANGGRAPH_VENV",
        Path.home() / ".cache" / "pocketrun-bench" / "langgraph-dev-venv",
    )
)
LANGGRAPH_PINS = ["langgraph-cli[inmem]==0.4.40", "langgraph==1.2.24"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- CPU time of a process tree ------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(ppid, utime + stime ticks of all its threads, cutime + cstime ticks)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); ppid is field 4, utime..cstime are fields 14-17
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant (each counts all its threads),
    plus what their waited-for children used."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                parents[int(entry.name)] = got[0]
                cpu[int(entry.name)] = got[1] + got[2]
    total = 0.0
    for pid in cpu:
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += cpu[pid]
    return total / TICK


# --- servers -------------------------------------------------------------------------------


class Server:
    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path, ready: str
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready = ready
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one, by its pid
        )

    def wait_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                if httpx.get(self.url + self.ready, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {self.ready} in {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this server leads
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


def start_pocketrun(tmp: Path) -> tuple[Server, dict[str, str]]:
    key = "prk_" + secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'b.db'}",
        "POCKETRUN_EXAMPLES": "true",
        "POCKETRUN_ADMIN_KEY": key,
        "POCKETRUN_FLOWS": "bench.peer_flows",
        "POCKETRUN_LOG_LEVEL": "WARNING",
    }
    server = Server(
        "pocketrun serve",
        [str(BIN / "pocketrun"), "serve"],
        env,
        ROOT,
        tmp / "pocketrun.log",
        "/healthz",
    )
    return server, {"Authorization": f"Bearer {key}"}


def langgraph_bin(args: argparse.Namespace) -> Path:
    """``langgraph`` of the langgraph-dev virtualenv, created on first use."""
    exe = Path(args.langgraph_venv) / "bin" / "langgraph"
    if exe.exists():
        return exe
    if args.no_install:
        raise RuntimeError(f"{exe} is missing (--no-install); see bench/README.md")
    venv = Path(args.langgraph_venv)
    print(f"  creating {venv} for langgraph dev ({', '.join(LANGGRAPH_PINS)})", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", *LANGGRAPH_PINS],
        check=True,
    )
    return exe


def start_langgraph(tmp: Path, exe: Path, args: argparse.Namespace) -> Server:
    app = tmp / "langgraph-app"
    app.mkdir()
    config = {
        "dependencies": ["."],
        "graphs": {FLOW: f"{ROOT / 'bench' / 'peer_flows.py'}:graph"},
    }
    (app / "langgraph.json").write_text(json.dumps(config, indent=2))
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGSMITH_API_KEY": "",
        "LANGCHAIN_API_KEY": "",
    }
    return Server(
        "langgraph dev",
        [
            str(exe),
            "dev",
            "--no-browser",
            "--no-reload",
            "--server-log-level",
            "WARNING",
            # its default is 10 concurrent runs per worker: let it take all the calls
            "--n-jobs-per-worker",
            str(max(10, args.concurrency)),
        ],
        env,
        app,
        tmp / "langgraph.log",
        "/ok",
    )


# --- the calls -----------------------------------------------------------------------------


def pocketrun_call(server: Server, headers: dict[str, str]) -> tuple[Any, dict, Any]:
    def ok(resp: httpx.Response) -> None:
        body = resp.json()
        out = body.get("output") or {}
        if resp.status_code != 201 or body.get("status") != "succeeded" or out.get("counter") != 10:
            raise RuntimeError(f"pocketrun answered {resp.status_code}: {resp.text[:500]}")

    url = f"{server.url}/v1/flows/{FLOW}/runs?wait=30"
    return lambda: url, {"input": {"counter": 0}}, ok


def langgraph_call(server: Server) -> tuple[Any, dict, Any]:
    """A run on a new thread, created by the same call (``if_not_exists: create``), with
    a checkpoint per step (``durability: sync``): as pocketrun's, a run persisted step by
    step, one call. (A stateless ``POST /runs/wait`` with ``durability: sync`` fails in
    langgraph-api 0.16.7 + langgraph 1.2.24: ``'AsyncPregelLoop' object has no attribute
    '_put_checkpoint_fut'``.)"""

    def ok(resp: httpx.Response) -> None:
        body = resp.json()
        if resp.status_code != 200 or body.get("counter") != 10:
            raise RuntimeError(f"langgraph dev answered {resp.status_code}: {resp.text[:500]}")

    def url() -> str:
        return f"{server.url}/threads/{uuid.uuid4()}/runs/wait"

    body = {
        "assistant_id": FLOW,
        "input": {"counter": 0},
        "durability": "sync",
        "if_not_exists": "create",
    }
    return url, body, ok


async def drive(
    url: Any, body: dict, ok: Any, headers: dict[str, str], runs: int, concurrency: int
) -> tuple[float, list[float]]:
    """``runs`` POSTs to ``url()``, ``concurrency`` at a time; (elapsed s, per-call s)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        left = iter(range(runs))
        lat: list[float] = []

        async def worker() -> None:
            for _ in left:
                t = time.perf_counter()
                resp = await client.post(url(), json=body)
                lat.append(time.perf_counter() - t)
                ok(resp)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, lat


def phase(server: Server, call: tuple[str, dict, Any], headers: dict, args: argparse.Namespace):
    url, body, ok = call
    asyncio.run(drive(url, body, ok, headers, args.warmup, args.concurrency))
    cpu0 = server.cpu()
    elapsed, lat = asyncio.run(drive(url, body, ok, headers, args.runs, args.concurrency))
    cpu = server.cpu() - cpu0
    return {
        "runs": args.runs,
        "elapsed_s": elapsed,
        "runs_per_s": args.runs / elapsed,
        "server_cpu_s": cpu,
        "server_cpu_ms_per_run": cpu / args.runs * 1e3,
        "latency_ms_median": median(lat) * 1e3,
        "latency_ms_p90": statistics.quantiles(lat, n=10, method="inclusive")[8] * 1e3
        if len(lat) > 1
        else lat[0] * 1e3,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    sides: dict[str, dict[str, Any]] = {"pocketrun": {"rounds": []}}
    if not args.skip_langgraph:
        sides["langgraph dev"] = {"rounds": []}
    with tempfile.TemporaryDirectory(prefix="pocketrun-bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        servers: dict[str, tuple[Server, tuple, dict]] = {}
        try:
            pr, headers = start_pocketrun(tmp)
            servers["pocketrun"] = (pr, pocketrun_call(pr, headers), headers)
            if "langgraph dev" in sides:
                try:
                    exe = langgraph_bin(args)
                    lg = start_langgraph(tmp, exe, args)
                    servers["langgraph dev"] = (lg, langgraph_call(lg), {})
                    info["langgraph_dev"] = subprocess.run(
                        [str(exe), "--version"], capture_output=True, text=True
                    ).stdout.strip()
                except Exception as exc:  # reported, not fatal: pocketrun's side still runs
                    sides["langgraph dev"]["error"] = str(exc)
                    print(f"  langgraph dev not run: {exc}", flush=True)
            for name, (server, _, _) in servers.items():
                try:
                    server.wait_up()
                except RuntimeError as exc:
                    if name == "pocketrun":
                        raise
                    sides[name]["error"] = str(exc)
                    print(f"  langgraph dev not run: {exc}", flush=True)
            for r in range(args.rounds):
                for name, (server, call, hdrs) in servers.items():
                    if "error" in sides[name]:
                        continue
                    got = phase(server, call, hdrs, args)
                    sides[name]["rounds"].append(got)
                    print(
                        f"  round {r + 1} {name}: {got['runs_per_s']:.0f} runs/s, "
                        f"server CPU {got['server_cpu_ms_per_run']:.2f} ms/run, "
                        f"p50 {got['latency_ms_median']:.1f} ms",
                        flush=True,
                    )
        finally:
            for server, _, _ in servers.values():
                server.stop()

    for side in sides.values():
        rounds = side["rounds"]
        for k in ("runs_per_s", "server_cpu_ms_per_run", "latency_ms_median", "latency_ms_p90"):
            side[k] = median([r[k] for r in rounds]) if rounds else float("nan")
    pr_side = sides["pocketrun"]
    aims = [
        {
            "aim": "pocketrun server CPU per run <= 5 ms",
            "value": pr_side["server_cpu_ms_per_run"],
            "rounds": [r["server_cpu_ms_per_run"] for r in pr_side["rounds"]],
            "ok": pr_side["server_cpu_ms_per_run"] <= 5.0,
        }
    ]
    lg_side = sides.get("langgraph dev")
    if lg_side and lg_side["rounds"]:
        per = [
            a["runs_per_s"] / b["runs_per_s"]
            for a, b in zip(pr_side["rounds"], lg_side["rounds"], strict=True)
        ]
        aims.append(
            {
                "aim": "runs/s pocketrun / langgraph dev >= 5",
                "value": median(per),
                "rounds": per,
                "ok": median(per) >= 5.0,
            }
        )
    return {
        "benchmark": "http_inline",
        "machine": info,
        "params": {
            "runs": args.runs,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "flow": FLOW,
            "langgraph_pins": LANGGRAPH_PINS,
        },
        "results": sides,
        "aims": aims,
    }


def report(payload: dict[str, Any]) -> str:
    p = payload["params"]
    rows = []
    for name, side in payload["results"].items():
        if "error" in side:
            rows.append([name, "not run", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                name,
                side["runs_per_s"],
                side["server_cpu_ms_per_run"],
                side["latency_ms_median"],
                side["latency_ms_p90"],
                len(side["rounds"]),
            ]
        )
    out = [
        table(
            f"Inline runs over HTTP ({p['runs']} calls, {p['concurrency']} at a time; "
            "medians over rounds)",
            ["server", "runs/s", "server CPU ms/run", "p50 ms", "p90 ms", "rounds"],
            rows,
        ),
        table(
            "Aims",
            ["aim", "measured", "per-round range", "status"],
            [
                [
                    a["aim"],
                    f"{a['value']:.2f}",
                    f"{min(a['rounds']):.2f}-{max(a['rounds']):.2f}" if a["rounds"] else "-",
                    "ok" if a["ok"] else "MISS",
                ]
                for a in payload["aims"]
            ],
        ),
    ]
    for name, side in payload["results"].items():
        if "error" in side:
            out.append(f"{name} not run: {side['error'].splitlines()[0]}")
    return "\n\n".join(out)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.http_inline", description=__doc__.split("\n")[0]
    )
    p.add_argument("--runs", type=int, default=500, help="calls per server per round")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=int, default=32, help="calls before timing")
    p.add_argument("--rounds", type=int, default=1, help="rounds; servers alternate in each")
    p.add_argument("--skip-langgraph", action="store_true")
    p.add_argument("--langgraph-venv", default=str(LANGGRAPH_VENV))
    p.add_argument("--no-install", action="store_true", help="never create the langgraph venv")
    p.add_argument("--output", default="http_inline", help="results/<name>.json")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> None:
    args = parse(argv)
    payload = bench(args)
    print()
    print(report(payload))
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
