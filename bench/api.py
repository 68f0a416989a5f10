"""API throughput: a real ``pocketrun serve`` against a bare FastAPI endpoint.

Starts, each in its own process on 127.0.0.1, ``pocketrun serve`` (the embedded default:
a SQLite file in a temp dir, local executor) and ``bench.bare_app`` (one route, a small
JSON, the same uvicorn settings), and drives both from a load generator in another
process (``wrk`` when installed, else ``bench.loadgen``), one phase at a time:

- bare GET   /bare                       vs  polls       GET  /v1/runs/{id} (a finished run)
- bare POST  /bare (same JSON body)      vs  submissions POST /v1/flows/hello/runs
                                                          {"input": ..., "mode": "background"}
- diagnostic: pocketrun's GET /healthz (its app and middleware, no database, no auth)

When the server authenticates (``api/auth.py``/``api/security.py`` know an admin key), a
generated ``POCKETRUN_ADMIN_KEY`` is passed to it and sent as ``Authorization: Bearer``;
``--header`` adds or overrides headers on pocketrun's requests.

    .venv/bin/python -m bench.api [--duration 10] [--connections 32] [--header 'K: V']
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine, median, save, table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BODY = {"input": {"name": "bench"}, "mode": "background"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def auth_wants_admin_key() -> bool:
    """Does this checkout's API read ``POCKETRUN_ADMIN_KEY`` (settings.admin_key)?"""
    for name in ("auth.py", "security.py"):
        path = ROOT / "api" / name
        if path.exists() and "admin_key" in path.read_text():
            return True
    return False


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /healthz in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()


# --- load generators -----------------------------------------------------------------------


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(
    url: str, method: str, body: Any, headers: list[str], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration:g}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for header in headers:
        argv += ["-H", header]
    if method == "POST":
        script = tmp / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=args.duration + 60)
    text = out.stdout
    if out.returncode != 0 or "Requests/sec" not in text:
        raise RuntimeError(f"wrk failed ({out.returncode}): {text}\n{out.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:(.*)", text)
    p99 = re.search(r"\s99%\s+(\S+)", text)
    avg = re.search(r"Latency\s+(\S+)", text)
    return {
        "requests": total,
        "requests_per_s": rps,
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else None,
        "latency_avg_ms": _seconds(avg.group(1)) * 1e3 if avg else None,
        "latency_p99_ms": _seconds(p99.group(1)) * 1e3 if p99 else None,
        "raw": text,
    }


def run_python(
    url: str, method: str, body: Any, headers: list[str], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.loadgen", url, "--method", method]
    argv += ["--connections", str(args.connections), "--duration", str(args.duration)]
    if body is not None:
        argv += ["--body", json.dumps(body)]
    for header in headers:
        argv += ["--header", header]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr}")
    return json.loads(out.stdout)


# --- the benchmark -------------------------------------------------------------------------


def drain(server: Proc, timeout: float) -> dict[str, Any]:
    """Wait until the executor's queue and slots are empty (the POST phase leaves a backlog)."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    executor: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            executor = httpx.get(server.url + "/readyz", timeout=5).json()["checks"]["executor"]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            executor = {}
        if executor.get("queued") == 0 and executor.get("in_flight") == 0:
            break
        time.sleep(0.5)
    return {"seconds": time.monotonic() - started, "executor": executor}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    generator = run_wrk if use_wrk else run_python
    headers = list(args.header)
    info = machine()
    info["loadgen"] = "wrk" if use_wrk else "bench.loadgen (python)"
    if use_wrk:
        info["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        info["wrk"] = info["wrk"].strip().splitlines()[0] if info["wrk"] else "wrk"
    with tempfile.TemporaryDirectory(prefix="pocketrun-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        env = {
            **os.environ,
            "POCKETRUN_DATABASE_URL": f"sqlite:///{tmp / 'pocketrun.db'}",
            "POCKETRUN_LOG_LEVEL": "WARNING",
            "POCKETRUN_EXAMPLES": "true",
        }
        auth = auth_wants_admin_key()
        if auth:
            key = "prk_" + secrets.token_urlsafe(32)
            env["POCKETRUN_ADMIN_KEY"] = key
            if not any(h.lower().startswith("authorization:") for h in headers):
                headers.append(f"Authorization: Bearer {key}")
        info["auth"] = "admin key (Bearer)" if auth else "none (local principal)"
        server = Proc("pocketrun serve", [str(BIN / "pocketrun"), "serve"], env, tmp / "srv.log")
        bare = Proc(
            "bare app", [sys.executable, "-m", "bench.bare_app"], dict(os.environ), tmp / "b.log"
        )
        try:
            server.wait_up()
            bare.wait_up()
            hdrs = dict(h.split(":", 1) for h in headers)
            hdrs = {k.strip(): v.strip() for k, v in hdrs.items()}
            created = httpx.post(
                server.url + "/v1/flows/hello/runs?wait=10", json=BODY, headers=hdrs, timeout=30
            )
            created.raise_for_status()
            run_id = created.json()["id"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = httpx.get(f"{server.url}/v1/runs/{run_id}", headers=hdrs).json()["status"]
                if status == "succeeded":
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"the seed run {run_id} did not succeed")
            phases = {
                "bare_get": (bare.url + "/bare", "GET", None, []),
                # diagnostic: pocketrun's app and middleware with no database and no auth
                "healthz": (server.url + "/healthz", "GET", None, []),
                "poll": (f"{server.url}/v1/runs/{run_id}", "GET", None, headers),
                "bare_post": (bare.url + "/bare", "POST", BODY, []),
                "submit": (server.url + "/v1/flows/hello/runs", "POST", BODY, headers),
            }
            rounds: list[dict[str, Any]] = []
            for r in range(args.rounds):
                got: dict[str, Any] = {}
                for name, (url, method, body, hs) in phases.items():
                    got[name] = generator(url, method, body, hs, args, tmp)
                    res = got[name]
                    print(
                        f"  round {r + 1} {name:<9} {res['requests_per_s']:>9.0f} req/s"
                        f"  non-2xx {res['non_2xx_3xx']}",
                        flush=True,
                    )
                got["drain_after_submit"] = drain(server, args.drain_timeout)
                rounds.append(got)
        finally:
            server.stop()
            bare.stop()
    for got in rounds:
        for res in got.values():
            res.pop("raw", None)

    def med(name: str) -> float:
        return median([g[name]["requests_per_s"] for g in rounds])

    bare_get, health, poll, bare_post, submit = (med(n) for n in phases)
    errors = sum(g[n]["non_2xx_3xx"] for g in rounds for n in phases)
    return {
        "benchmark": "api",
        "machine": info,
        "params": {
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk_threads": args.threads if use_wrk else None,
            "rounds": args.rounds,
            "body": BODY,
        },
        "results": {
            "bare_get_rps": bare_get,
            "healthz_rps": health,
            "polls_rps": poll,
            "bare_post_rps": bare_post,
            "submissions_rps": submit,
            "ratio_polls_bare": poll / bare_get,
            "ratio_submissions_bare": submit / bare_post,
            "polls_aim_met": poll / bare_get >= 0.5,
            "submissions_aim_met": submit / bare_post >= 0.25,
            "non_2xx_3xx_total": errors,
        },
        "rounds": rounds,
    }


def report(payload: dict[str, Any]) -> str:
    r = payload["results"]
    p = payload["params"]
    return (
        table(
            f"API throughput ({payload['machine']['loadgen']}, {p['connections']} connections, "
            f"{p['duration_s']:g}s per phase, median of {p['rounds']} round(s))",
            ["endpoint", "req/s", "bare req/s", "ratio", "aim"],
            [
                [
                    "GET /v1/runs/{id} (poll)",
                    r["polls_rps"],
                    r["bare_get_rps"],
                    f"{r['ratio_polls_bare']:.2f}",
                    ">= 0.50 " + ("ok" if r["polls_aim_met"] else "MISS"),
                ],
                [
                    "POST /v1/flows/hello/runs (background)",
                    r["submissions_rps"],
                    r["bare_post_rps"],
                    f"{r['ratio_submissions_bare']:.2f}",
                    ">= 0.25 " + ("ok" if r["submissions_aim_met"] else "MISS"),
                ],
                [
                    "GET /healthz (diagnostic: no db, no auth)",
                    r["healthz_rps"],
                    r["bare_get_rps"],
                    f"{r['healthz_rps'] / r['bare_get_rps']:.2f}",
                    "-",
                ],
            ],
        )
        + f"\nnon-2xx/3xx responses: {r['non_2xx_3xx_total']}"
    )


def run(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10, help="seconds per phase")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument(
        "--header", action="append", default=[], help="extra header for pocketrun, 'K: V'"
    )
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--output", default="api", help="results/<name>.json")
    args = p.parse_args(argv)
    payload = bench(args)
    print()
    print(report(payload))
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
