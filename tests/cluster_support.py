"""A real ``pocketrun serve --workers N``, its worker processes, and reading its runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from db.database import Database
from db.models import runs
from tests.support import BIN, ROOT, Server, wait_until

FLOWS = "tests.edge_flows,tests.drain_flows"


class Cluster(Server):
    """``pocketrun serve`` with ``--workers``; ``workers=1`` is the plain single process."""

    def __init__(self, database_url: str, *, workers: int = 1, **kwargs: Any) -> None:
        super().__init__(database_url, **kwargs)
        self.workers = workers
        self.answered: set[int] = set()  # worker pids seen answering
        self.env.setdefault("POCKETRUN_FLOWS", FLOWS)
        if "tests.drain_flows" not in self.env["POCKETRUN_FLOWS"]:
            self.env["POCKETRUN_FLOWS"] += ",tests.drain_flows"

    def start(self, timeout: float = 60) -> Cluster:
        assert self.log_path is not None, "a cluster's log is what some tests read"
        out = open(self.log_path, "ab")  # noqa: SIM115
        argv = [str(BIN / "pocketrun"), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*argv, "--workers", str(self.workers)],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.all_serving, timeout, 0.05, f"all {self.workers} workers to answer")
        return self

    def all_serving(self) -> bool:
        """Whether each live worker process (and no fewer than ``workers``) has answered."""
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc and self.proc.returncode}")
        pid = self.answering_pid()
        if pid is not None:
            self.answered.add(pid)
        live = self.worker_pids()
        return len(live) == self.workers and live <= self.answered

    def answering_pid(self) -> int | None:
        """The pid of the worker process that answers a /readyz on a new connection."""
        try:
            body = httpx.get(self.url + "/readyz", timeout=2).json()
            return int(body["checks"]["executor"]["worker"].rsplit(":", 1)[1])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def worker_pids(self) -> set[int]:
        """The API processes: the supervisor's children that uvicorn spawned (not the
        resource tracker multiprocessing also starts)."""
        assert self.proc is not None
        if self.workers == 1:
            return {self.proc.pid} if self.proc.poll() is None else set()
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except FileNotFoundError:
            return set()
        pids = set()
        for pid in map(int, children.split()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in cmdline:
                pids.add(pid)
        return pids

    def terminate(self, timeout: float = 60) -> float:
        """SIGTERM the server; the seconds until it exited."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the workers, then the supervisor (whose death would orphan them)."""
        if self.proc is not None and self.workers > 1:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        super().kill()

    def log_lines(self) -> list[str]:
        assert self.log_path is not None
        return [line for line in self.log_path.read_text().splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """The log, one JSON object per line (fails on a line that is not one)."""
        return [json.loads(line) for line in self.log_lines()]


def read_runs(db_url: str, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run rows straight from the database (all of them without ``ids``), by id."""

    async def main() -> dict[str, dict[str, Any]]:
        db = Database(db_url)
        try:
            async with db.read() as conn:
                query = select(runs)
                if ids is not None:
                    query = query.where(runs.c.id.in_([uuid.UUID(i) for i in ids]))
                rows = (await conn.execute(query)).mappings()
                return {str(r["id"]): dict(r) for r in rows}
        finally:
            await db.close()

    return asyncio.run(main())


class Servers:
    """The servers a test starts on one database; all killed, workers too, on exit."""

    def __init__(self, db_url: str, tmp_path: Path, **env: str) -> None:
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.env = env
        self.started: list[Cluster] = []

    def start(self, name: str, workers: int = 1, **env: str) -> Cluster:
        server = Cluster(
            self.db_url,
            workers=workers,
            env={**self.env, **env},
            log_path=self.tmp_path / f"{name}.log",
        )
        self.started.append(server)
        return server.start()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *_: object) -> None:
        for server in self.started:
            server.kill()
