"""The cost of authentication on a status poll.

Polls per second of ``GET /v1/runs/{id}`` on one finished run, through real uvicorn
servers on one SQLite database, driven by ``wrk``:

- ``api key``: the normal app, ``Authorization: Bearer prk_...``;
- ``jwt``: the normal app, an HS256 JWT;
- ``no auth``: a bench-only app whose authenticator takes any bearer token for a fixed
  admin (everything else identical: middleware, fast poll path, handler, query).

Rounds are interleaved and the median of each is reported; the aim is under 10% slower.
Run: ``.venv/bin/python -m bench.bench_auth [--seconds 3 --rounds 5 --connections 8]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jwt

from bench.common import machine, median, save, table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN_KEY = "prk_bench-admin-key-0123456789abcdefghijklmnop"
JWT_SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def noauth_app():
    """The bench-only app: ``create_app`` whose authenticator accepts any bearer token as a
    fixed admin, so every request takes the same path (fast poll path included) minus the
    work of checking a credential."""
    from contextlib import asynccontextmanager

    from api.app import create_app
    from core.principal import Principal, Role

    app = create_app()
    fixed = Principal(subject="bench", tenant="default", role=Role.admin)

    class Anyone:
        async def authenticate(self, credentials: str) -> Principal:
            return fixed

    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        async with started(app_):
            app_.state.security.authenticator = Anyone()
            yield

    app.router.lifespan_context = lifespan
    return app


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(env: dict[str, str], port: int, factory: bool) -> subprocess.Popen:
    if factory:
        cmd = [
            str(BIN / "python"),
            "-m",
            "uvicorn",
            "bench.bench_auth:noauth_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    else:
        cmd = [str(BIN / "pocketrun"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def _wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed requests:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def auth_microbench(n: int = 20_000) -> dict[str, float]:
    """Microseconds per authentication in-process (key: cache hit; JWT: full HS256 verify):
    a load-independent view of what the HTTP numbers above measure through the noise."""
    import asyncio

    from api.auth import Authenticator
    from core.settings import Settings
    from db.keys import KeyRepository
    from db.migrate import upgrade
    from db.store import open_store

    async def run() -> dict[str, float]:
        tmp = Path(tempfile.mkdtemp(prefix="bench-auth-micro-"))
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp / 'micro.db'}", jwt_secret=JWT_SECRET
        )
        db = open_store(settings.database_url)
        await upgrade(db)
        await KeyRepository(db).bootstrap(ADMIN_KEY)
        auth = Authenticator(settings, KeyRepository(db))
        token = jwt.encode(
            {"sub": "b", "tenant": "default", "role": "admin", "exp": int(time.time()) + 3600},
            JWT_SECRET,
            algorithm="HS256",
        )
        out = {}
        for name, credential in (("api key", ADMIN_KEY), ("jwt (HS256)", token)):
            await auth.authenticate(credential)
            started = time.perf_counter()
            for _ in range(n):
                await auth.authenticate(credential)
            out[name] = (time.perf_counter() - started) / n * 1e6
        await db.close()
        shutil.rmtree(tmp, ignore_errors=True)
        return out

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed for this benchmark")

    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    env = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        "POCKETRUN_ADMIN_KEY": ADMIN_KEY,
        "POCKETRUN_JWT_SECRET": JWT_SECRET,
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "POCKETRUN_EXAMPLES": "true",
    }
    env.pop("POCKETRUN_RATE_LIMIT", None)
    env.pop("POCKETRUN_REDIS_URL", None)
    auth_port, open_port = _free_port(), _free_port()
    procs = [_start(env, auth_port, factory=False)]
    try:
        procs.append(_start(env, open_port, factory=True))
        key_headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        made = httpx.post(
            f"http://127.0.0.1:{auth_port}/v1/flows/hello/runs?wait=10",
            json={"input": {"name": "bench"}},
            headers=key_headers,
            timeout=30,
        )
        made.raise_for_status()
        run_id = made.json()["id"]
        token = jwt.encode(
            {"sub": "bench", "tenant": "default", "role": "admin", "exp": int(time.time()) + 3600},
            JWT_SECRET,
            algorithm="HS256",
        )
        variants = {
            "no auth (bench-only app)": (open_port, {"Authorization": "Bearer anything"}),
            "api key": (auth_port, key_headers),
            "jwt (HS256)": (auth_port, {"Authorization": f"Bearer {token}"}),
        }
        for name, (port, headers) in variants.items():  # warm up, and check each answers 200
            url = f"http://127.0.0.1:{port}/v1/runs/{run_id}"
            assert httpx.get(url, headers=headers).status_code == 200, name
            _wrk(url, headers, 1, args.connections)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (port, headers) in variants.items():
                url = f"http://127.0.0.1:{port}/v1/runs/{run_id}"
                samples[name].append(_wrk(url, headers, args.seconds, args.connections))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    micro = auth_microbench()
    base = median(samples["no auth (bench-only app)"])
    rows = []
    results = {}
    for name, values in samples.items():
        med = median(values)
        slower = (base - med) / base * 100
        rows.append([name, med, min(values), max(values), f"{slower:+.1f}%"])
        results[name] = {"median_rps": med, "samples": values, "slower_pct": slower}
    print(
        table(
            f"GET /v1/runs/{{id}} polls/s (wrk, {args.connections} connections, "
            f"{args.rounds} x {args.seconds:g}s interleaved)",
            ["variant", "median/s", "min/s", "max/s", "slower than no auth"],
            rows,
        )
    )
    per_request_us = 1e6 / base
    print(
        table(
            f"authentication alone, in-process (one no-auth poll took {per_request_us:,.0f} us)",
            ["credential", "us per call", "share of a no-auth poll"],
            [[k, v, f"{v / per_request_us * 100:.1f}%"] for k, v in micro.items()],
        )
    )
    path = save(
        "auth",
        {
            "benchmark": "auth",
            "machine": machine(),
            "params": vars(args),
            "results": results,
            "auth_us_in_process": micro,
            "aim": "auth under 10% slower than no auth",
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
