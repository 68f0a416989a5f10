"""What the Celery tests share: private Redis servers, real `pocketrun worker` processes,
helpers to create and inspect runs, and flows built for fault tests.

Importing this module registers the ``celery-*`` flows (workers load it through
``POCKETRUN_FLOWS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pocketflow import AsyncFlow, AsyncNode, Flow, Node
from pydantic import BaseModel, Field

from core.context import step_key
from db.store import NewRun, open_store
from flows.registry import REGISTRY, register
from tests.edge_flows import CountedIn, Step, build_counted
from tests.support import BIN, ROOT, RedisServer, Server, wait_until
from workers.dispatch import Dispatcher, redis_client

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}

# ----------------------------------------------------------------------------------------
# flows for fault tests


register(
    "celery-counted",
    build_counted,
    input=CountedIn,
    max_steps=20_100,
    step_timeout=30,
    run_timeout=None,
    concurrency=1,
    description="edge-counted with a concurrency limit of 1",
)


class LogIn(BaseModel):
    log: str = Field(..., min_length=1)
    seconds: float = Field(0.2, ge=0, le=60)
    steps: int = Field(3, ge=1, le=100)


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()


class BlockingAsync(AsyncNode):
    """Blocks the event loop (time.sleep in exec_async): only a signal can interrupt it."""

    def __init__(self) -> None:
        super().__init__(max_retries=3, wait=0)

    async def prep_async(self, shared):
        return shared["log"], shared["seconds"]

    async def exec_async(self, prep_res):
        log, seconds = prep_res
        _append(log, f"exec {step_key()} retry={self.cur_retry}")
        time.sleep(seconds)  # noqa: ASYNC251  (blocking the loop is the point)
        return "slept"

    async def post_async(self, shared, prep_res, exec_res):
        shared["slept"] = exec_res


def build_block() -> AsyncFlow:
    first = BlockingAsync()
    first >> Step("after")
    return AsyncFlow(start=first)


register(
    "celery-block",
    build_block,
    input=LogIn,
    step_timeout=None,
    run_timeout=None,
    description="an async node that blocks the loop",
)


class BlockingSync(Node):
    """Sleeps in its step thread, with no step timeout: only the task time limit stops it."""

    def __init__(self) -> None:
        super().__init__(max_retries=3, wait=0)

    def prep(self, shared):
        return shared["log"], shared["seconds"]

    def exec(self, prep_res):
        log, seconds = prep_res
        _append(log, f"exec {step_key()} retry={self.cur_retry}")
        time.sleep(seconds)
        return "slept"

    def post(self, shared, prep_res, exec_res):
        shared["slept"] = exec_res


def build_block_sync() -> Flow:
    first = BlockingSync()
    first >> Step("after")
    return Flow(start=first)


register(
    "celery-block-sync",
    build_block_sync,
    input=LogIn,
    step_timeout=None,
    run_timeout=None,
    description="a sync node that sleeps in its thread",
)


class Suicide(Node):
    """Kills its own process mid-step (SIGKILL), every time."""

    def prep(self, shared):
        return shared["log"]

    def exec(self, log):
        _append(log, f"exec {step_key()} pid={os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)


def build_suicide() -> Flow:
    first = Step("before")
    first >> Suicide() >> Step("after")
    return Flow(start=first)


register("celery-suicide", build_suicide, input=LogIn, description="kills its worker process")


class Interval(Node):
    """Logs "run start end" around a sleep, to check that runs of a flow never overlap."""

    def prep(self, shared):
        return shared["log"], shared["seconds"], shared.get("n", 0), shared["steps"]

    def exec(self, prep_res):
        log, seconds, _, _ = prep_res
        start = time.time()
        time.sleep(seconds)
        run = (step_key() or "?").split(":")[0]
        _append(log, f"{run} {start:.6f} {time.time():.6f}")

    def post(self, shared, prep_res, exec_res):
        shared["n"] = prep_res[2] + 1
        return "again" if shared["n"] < prep_res[3] else "done"


def build_limited() -> Flow:
    node = Interval()
    node - "again" >> node
    node - "done" >> Step("end")
    return Flow(start=node)


register(
    "celery-limited", build_limited, input=LogIn, concurrency=1, description="one run at a time"
)


class Bump(Node):
    def post(self, shared, prep_res, exec_res):
        shared["n"] = shared.get("n", 0) + 1


def build_tiny() -> Flow:
    first = Bump()
    first >> Step("end")
    return Flow(start=first)


register("celery-tiny", build_tiny, description="two quick nodes")


# ----------------------------------------------------------------------------------------
# processes


class Worker:
    """A real `pocketrun worker` (Celery, prefork) in its own process group."""

    def __init__(
        self,
        name: str,
        database_url: str,
        redis_url: str,
        *,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.database_url = database_url
        self.env = {
            **os.environ,
            **worker_env(database_url, redis_url),
            **(env or {}),
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(BIN / "pocketrun"),
                "worker",
                "--concurrency",
                str(self.concurrency),
                "--name",
                self.name,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 60) -> Worker:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}")
            return len(live_workers(self.database_url, self.name)) >= self.concurrency

        wait_until(ready, timeout, 0.2, f"worker {self.name} to heartbeat")
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker: the Celery parent and every pool process."""
        if self.proc and self.proc.poll() is None:
            with_suppress_kill(self.proc.pid)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc:
            with_suppress_kill(self.proc.pid)


def with_suppress_kill(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "POCKETRUN_DATABASE_URL": database_url,
        "POCKETRUN_REDIS_URL": redis_url,
        "POCKETRUN_EXECUTOR": "celery",
        "POCKETRUN_FLOWS": "tests.edge_flows,tests.celery_support",
        "POCKETRUN_EXAMPLES": "true",
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "POCKETRUN_LEASE_TTL": "3",
        "POCKETRUN_SWEEP_INTERVAL": "0.5",
        "POCKETRUN_WORKER_HEARTBEAT": "0.5",
        "POCKETRUN_WORKER_TTL": "3",
        "POCKETRUN_REDISPATCH_AFTER": "10",
        "POCKETRUN_THROTTLE_DELAY": "0.2",
    }


# ----------------------------------------------------------------------------------------
# the database and the broker, from the test process


def _pg(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_pg(url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(url, sql, *args))


def live_workers(url: str, name: str | None = None) -> list[asyncpg.Record]:
    rows = fetch(url, "SELECT * FROM workers WHERE expires_at >= now() ORDER BY name, pid")
    return [r for r in rows if name is None or r["name"] == name]


async def _create_runs(
    database_url: str,
    redis_url: str,
    specs: Iterable[tuple[str, dict[str, Any]]],
    priority: int,
    dispatch: bool,
) -> list[uuid.UUID]:
    db = open_store(database_url)
    client = redis_client(redis_url)
    ids: list[uuid.UUID] = []
    try:
        repo = db
        created = []
        for flow, data in specs:
            spec = REGISTRY.get(flow)
            row, _ = await repo.create(
                NewRun(
                    tenant="default",
                    principal="test",
                    flow=spec.name,
                    flow_version=spec.version,
                    graph_hash=spec.graph_hash,
                    mode="background",
                    queue=spec.queue,
                    priority=priority,
                    input=spec.validate_input(data),
                    metadata={},
                    run_timeout=spec.run_timeout,
                    current_node=spec.start_node,
                )
            )
            ids.append(row["id"])
            created.append((row["id"], spec.queue, priority))
        if dispatch:
            await Dispatcher(client).publish_many(created)
    finally:
        await client.aclose()
        await db.close()
    return ids


def create_runs(
    database_url: str,
    redis_url: str,
    specs: Iterable[tuple[str, dict[str, Any]]],
    *,
    priority: int = 0,
    dispatch: bool = True,
) -> list[uuid.UUID]:
    """Record runs in the database and send their messages, as the API does."""
    return asyncio.run(_create_runs(database_url, redis_url, specs, priority, dispatch))


def run_rows(url: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    rows = fetch(url, "SELECT * FROM runs WHERE id = ANY($1::uuid[])", ids)
    return {r["id"]: r for r in rows}


def steps_of(url: str, run_id: uuid.UUID) -> list[asyncpg.Record]:
    return fetch(url, "SELECT * FROM steps WHERE run_id = $1 ORDER BY seq", run_id)


def wait_terminal(url: str, ids: list[uuid.UUID], timeout: float = 60) -> dict:
    def done() -> dict | None:
        rows = run_rows(url, ids)
        if len(rows) == len(ids) and all(r["status"] in TERMINAL for r in rows.values()):
            return rows
        return None

    try:
        return wait_until(done, timeout, 0.2, f"{len(ids)} runs to finish")
    except AssertionError:
        rows = run_rows(url, ids)
        pending = {str(k): r["status"] for k, r in rows.items() if r["status"] not in TERMINAL}
        raise AssertionError(
            f"runs not finished after {timeout}s: {list(pending.items())[:10]}"
        ) from None


def truncate(url: str) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(_pg(url))
        try:
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
        finally:
            await conn.close()

    asyncio.run(main())


# ----------------------------------------------------------------------------------------
# fixtures (test modules import them)


@pytest.fixture
def pg(pg_url: str) -> str:
    truncate(pg_url)
    return pg_url


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(pg: str, redis_server: RedisServer, tmp_path: Path):
    started: list[Worker] = []

    def start(name: str, concurrency: int = 1, env: dict[str, str] | None = None) -> Worker:
        worker = Worker(
            name,
            pg,
            redis_server.url,
            concurrency=concurrency,
            env=env,
            log_path=tmp_path / f"{name}.log",
        )
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.kill()


def celery_server(
    pg: str, redis_url: str, start_worker: Any, tmp_path: Path, env: dict[str, str], name: str
) -> Server:
    """A ready worker ``name`` of two processes and a real API server, both with ``env``."""
    start_worker(name, concurrency=2, env=env).wait_ready()
    return Server(
        pg, env={**worker_env(pg, redis_url), **env}, log_path=tmp_path / "server.log"
    ).start()
