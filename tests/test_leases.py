"""Leases under pressure: long runs beside other processes, skewed clocks, failed releases."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import libfaketime
import pytest

from db.migrate import upgrade
from db.store import open_store
from tests.celery_support import (  # noqa: F401  (fixtures)
    create_runs,
    pg,
    redis_server,
    start_worker,
    steps_of,
    wait_terminal,
)
from tests.support import BIN, ROOT, Server, wait_for_run, wait_until


def executions(log: Path, run_id: str) -> Counter[int]:
    """How many times each step seq was executed, by the step keys a node logged."""
    counts: Counter[int] = Counter()
    for line in log.read_text().split():
        rid, seq = line.rsplit(":", 1)
        assert rid == run_id, line
        counts[int(seq)] += 1
    return counts


def skewed(seconds: int) -> dict[str, str]:
    """The environment that runs a process with its wall clock ``seconds`` off."""
    _, env = libfaketime.get_reload_information()
    return {**env, "FAKETIME": f"{seconds:+d}"}


def read_steps(url: str, run_id: str) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        store = open_store(url)
        try:
            return [dict(s) for s in await store.steps(uuid.UUID(run_id))]
        finally:
            await store.close()

    return asyncio.run(main())


def test_skewed_clock_helper_really_skews_a_process() -> None:
    out = subprocess.run(
        [str(BIN / "python"), "-c", "import time; print(time.time())"],
        env={**os.environ, **skewed(3600)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert abs(float(out.stdout) - time.time() - 3600) < 60


def test_cli_run_wait_beside_serve_on_one_sqlite_file_is_never_taken_over(tmp_path: Path) -> None:
    """A `run --wait` three times longer than LEASE_TTL, with steps longer than the TTL,
    while a `serve` sweeps the same file: every step runs once, all in the CLI."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"

    async def migrate() -> None:
        store = open_store(url)
        await upgrade(store)
        await store.close()

    asyncio.run(migrate())
    ttl = {"POCKETRUN_LEASE_TTL": "1", "POCKETRUN_SWEEP_INTERVAL": "0.2"}
    server = Server(url, env=ttl, log_path=tmp_path / "serve.log").start()
    log = tmp_path / "execs.log"
    try:
        steps, delay = 3, 1.3  # each step outlives the lease: only renewal keeps it
        result = subprocess.run(
            [
                str(BIN / "pocketrun"),
                "run",
                "edge-counted",
                "--input",
                json.dumps({"steps": steps, "delay": delay, "log": str(log)}),
                "--wait",
            ],
            cwd=ROOT,
            env={
                **server.env,
                **ttl,
                "POCKETRUN_WORKER_NAME": "cli-runner",
                "COLUMNS": "200",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        run_id = result.stdout.split()[1]
        with server.client() as client:
            run = client.get(f"/v1/runs/{run_id}").json()
    finally:
        server.kill()
    assert run["status"] == "succeeded", run
    assert executions(log, run_id) == {seq: 1 for seq in range(1, steps + 1)}
    rows = read_steps(url, run_id)
    assert [s["seq"] for s in rows] == list(range(1, steps + 2))
    assert {s["worker"] for s in rows} == {"cli-runner"}


@pytest.fixture
def pg_url_clean(pg: str) -> str:  # noqa: F811
    return pg


def _start_counted(server: Server, log: Path, steps: int, delay: float) -> str:
    with server.client() as client:
        created = client.post(
            "/v1/flows/edge-counted/runs",
            json={"input": {"steps": steps, "delay": delay, "log": str(log)}},
        )
        assert created.status_code in (201, 202), created.text
        return created.json()["id"]


def test_a_process_an_hour_ahead_does_not_take_a_live_run(
    pg_url_clean: str, tmp_path: Path
) -> None:
    common = {"POCKETRUN_LEASE_TTL": "3", "POCKETRUN_SWEEP_INTERVAL": "0.2"}
    owner = Server(
        pg_url_clean,
        env={**common, "POCKETRUN_WORKER_NAME": "on-time"},
        log_path=tmp_path / "owner.log",
    ).start()
    ahead = None
    try:
        log = tmp_path / "execs.log"
        run_id = _start_counted(owner, log, steps=8, delay=0.4)
        ahead = Server(
            pg_url_clean,
            env={**common, **skewed(3600), "POCKETRUN_WORKER_NAME": "ahead"},
            log_path=tmp_path / "ahead.log",
        ).start()
        with owner.client() as client:
            run = wait_for_run(client, run_id, timeout=60)
    finally:
        owner.kill()
        if ahead is not None:
            ahead.kill()
    assert run["status"] == "succeeded", run
    assert executions(log, run_id) == {seq: 1 for seq in range(1, 9)}
    assert {s["worker"] for s in read_steps(pg_url_clean, run_id)} == {"on-time"}


def test_a_process_an_hour_behind_still_recovers_a_dead_ones_run(
    pg_url_clean: str, tmp_path: Path
) -> None:
    common = {"POCKETRUN_LEASE_TTL": "2", "POCKETRUN_SWEEP_INTERVAL": "0.2"}
    dead = Server(
        pg_url_clean,
        env={**common, "POCKETRUN_WORKER_NAME": "dies"},
        log_path=tmp_path / "dies.log",
    ).start()
    log = tmp_path / "execs.log"
    run_id = _start_counted(dead, log, steps=6, delay=0.3)
    with dead.client() as client:
        wait_until(
            lambda: client.get(f"/v1/runs/{run_id}").json()["steps"] >= 2,
            timeout=30,
            message="two committed steps",
        )
    dead.kill()
    behind = Server(
        pg_url_clean,
        env={**common, **skewed(-3600), "POCKETRUN_WORKER_NAME": "behind"},
        log_path=tmp_path / "behind.log",
    ).start()
    try:
        started = time.monotonic()
        with behind.client() as client:
            run = wait_for_run(client, run_id, timeout=60)
        recovered_in = time.monotonic() - started
    finally:
        behind.kill()
    assert run["status"] == "succeeded", run
    assert recovered_in < 30  # the lease's TTL and a sweep, not the hour of skew
    workers = [s["worker"] for s in read_steps(pg_url_clean, run_id)]
    assert workers[0] == "dies" and workers[-1] == "behind"
    # at most the step in flight at the kill ran twice
    assert sum(n - 1 for n in executions(log, run_id).values()) <= 1


def test_a_concurrency_one_flow_keeps_flowing_after_a_slot_release_fails(
    pg: str,  # noqa: F811
    redis_server,  # noqa: F811
    start_worker,  # noqa: F811
    tmp_path: Path,
) -> None:
    worker = start_worker("w-release", env={"POCKETRUN_FAULTS": "slot_release"}).wait_ready()
    log = tmp_path / "intervals.log"
    ids = create_runs(
        pg,
        redis_server.url,
        [("celery-limited", {"log": str(log), "seconds": 0.1, "steps": 2})] * 3,
    )
    rows = wait_terminal(pg, ids, timeout=60)
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert "slot release failed" in (tmp_path / "w-release.log").read_text()
    # still one run at a time
    spans = sorted(
        (float(a), float(b), run)
        for run, a, b in (line.split() for line in log.read_text().splitlines())
    )
    for (_, end, run), (start, _, other) in itertools.pairwise(spans):
        assert run == other or start >= end - 0.01
    worker.stop()
