"""Fault injection on a real ``pocketrun serve``: kill -9 mid-run, and SIGTERM drains.

``edge-counted`` appends its step key (``run_id:seq``) to a log file on every exec, so
the log shows how often each step really ran, across processes.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db.database import Database
from db.models import runs, steps
from tests.support import Server, wait_for_run, wait_until

STEPS = 40
DELAY = 0.1


def _read(db_url: str, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's row and its step rows, straight from the database."""

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        db = Database(db_url)
        try:
            async with db.read() as conn:
                key = uuid.UUID(run_id)
                run = (await conn.execute(select(runs).where(runs.c.id == key))).mappings().one()
                rows = await conn.execute(
                    select(steps).where(steps.c.run_id == key).order_by(steps.c.seq)
                )
                return dict(run), [dict(r) for r in rows.mappings()]
        finally:
            await db.close()

    return asyncio.run(main())


def _start_counted(server: Server, log: Path) -> str:
    with server.client() as client:
        created = client.post(
            "/v1/flows/edge-counted/runs",
            json={"input": {"steps": STEPS, "delay": DELAY, "log": str(log)}},
        )
        assert created.status_code in (201, 202), created.text
        return created.json()["id"]


def _wait_for_steps(server: Server, run_id: str, n: int) -> None:
    with server.client() as client:
        wait_until(
            lambda: client.get(f"/v1/runs/{run_id}").json()["steps"] >= n,
            timeout=30,
            message=f"{n} committed steps",
        )


def _executions(log: Path, run_id: str) -> Counter[int]:
    """How many times each step seq was executed, by the keys in the log."""
    counts: Counter[int] = Counter()
    for line in log.read_text().split():
        rid, seq = line.rsplit(":", 1)
        assert rid == run_id, line
        counts[int(seq)] += 1
    return counts


def _finish_and_check_steps(server: Server, run_id: str) -> list[dict[str, Any]]:
    with server.client() as client:
        run = wait_for_run(client, run_id, timeout=60)
        assert run["status"] == "succeeded", run
        assert run["steps"] == STEPS + 1
        items = client.get(f"/v1/runs/{run_id}/steps").json()["items"]
    # every seq committed exactly once, in order: 40 counted steps, then the end node
    assert [s["seq"] for s in items] == list(range(1, STEPS + 2))
    assert [s["node"] for s in items] == ["Counted"] * STEPS + ["Step"]
    assert all(s["status"] == "succeeded" for s in items)
    return items


def test_server_killed_mid_run_resumes_elsewhere_and_no_committed_step_runs_again(
    server_factory, db_url: str, tmp_path: Path
) -> None:
    env = {"POCKETRUN_LEASE_TTL": "2", "POCKETRUN_SWEEP_INTERVAL": "0.5"}
    log = tmp_path / "executions.log"
    first = server_factory(env=env)
    run_id = _start_counted(first, log)
    _wait_for_steps(first, run_id, 10)
    first.kill()  # SIGKILL: no drain, no lease release

    at_kill, rows_at_kill = _read(db_url, run_id)
    committed = at_kill["seq"]
    assert at_kill["status"] == "running"
    assert at_kill["lease_owner"] is not None  # the dead server still "holds" it
    assert 10 <= committed < STEPS
    assert [r["seq"] for r in rows_at_kill] == list(range(1, committed + 1))
    ran_before_restart = _executions(log, run_id)
    assert set(ran_before_restart) <= set(range(1, committed + 2))  # at most one in flight

    second = server_factory(env=env)
    items = _finish_and_check_steps(second, run_id)

    # the takeover is visible: steps up to the kill by the first server, the rest by the second
    workers = [s["worker"] for s in items]
    assert len(set(workers[:committed])) == 1
    assert len(set(workers[committed:])) == 1
    assert workers[0] != workers[-1]

    counts = _executions(log, run_id)
    assert set(counts) == set(range(1, STEPS + 1))
    # every step executed once, except at most the one in flight at the kill, which ran twice
    repeated = {seq: n for seq, n in counts.items() if n != 1}
    assert set(repeated) <= {committed + 1}
    assert all(n == 2 for n in repeated.values())
    # no step committed before the kill ran again
    assert all(counts[seq] == 1 for seq in range(1, committed + 1))

    final, _ = _read(db_url, run_id)
    assert final["state"]["count"] == STEPS
    assert final["lease_owner"] is None


def test_sigterm_drains_releases_the_lease_and_a_new_server_takes_over_at_once(
    server_factory, db_url: str, tmp_path: Path
) -> None:
    grace = 2.0
    # a 60 s lease: a run not released on shutdown would sit idle for a minute
    env = {
        "POCKETRUN_LEASE_TTL": "60",
        "POCKETRUN_SWEEP_INTERVAL": "0.5",
        "POCKETRUN_DRAIN_GRACE": str(grace),
    }
    log = tmp_path / "executions.log"
    first = server_factory(env=env)
    run_id = _start_counted(first, log)
    _wait_for_steps(first, run_id, 5)

    started = time.monotonic()
    code = first.stop(timeout=grace + 10)  # SIGTERM
    elapsed = time.monotonic() - started
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
    assert elapsed < grace + 3, f"shutdown took {elapsed:.1f}s"

    drained, _ = _read(db_url, run_id)
    assert drained["status"] == "running"
    assert drained["lease_owner"] is None and drained["lease_expires_at"] is None
    stopped_at = drained["seq"]
    assert 5 <= stopped_at < STEPS
    # the step in flight finished and committed: nothing ran that was not committed
    assert _executions(log, run_id) == Counter(range(1, stopped_at + 1))

    second = server_factory(env=env)
    restarted = time.monotonic()
    _finish_and_check_steps(second, run_id)
    assert time.monotonic() - restarted < 30  # well inside the 60 s lease
    assert _executions(log, run_id) == Counter(range(1, STEPS + 1))  # each step once


def test_sigterm_with_a_step_longer_than_the_grace_still_hands_the_run_back(
    server_factory, db_url: str, tmp_path: Path
) -> None:
    grace = 0.3
    env = {
        "POCKETRUN_LEASE_TTL": "60",
        "POCKETRUN_SWEEP_INTERVAL": "0.5",
        "POCKETRUN_DRAIN_GRACE": str(grace),
    }
    log = tmp_path / "executions.log"
    first = server_factory(env=env)
    with first.client() as client:
        created = client.post(
            "/v1/flows/edge-counted/runs",
            json={"input": {"steps": 1, "delay": 2.5, "log": str(log)}},
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
    wait_until(lambda: log.exists() and log.read_text(), timeout=30, message="the step to start")

    started = time.monotonic()
    first.stop(timeout=10)
    assert time.monotonic() - started < 2.0  # did not wait for the 2.5 s step

    drained, rows = _read(db_url, run_id)
    assert rows == []  # the cut-off step was not committed
    assert drained["status"] == "running" and drained["seq"] == 0
    assert drained["lease_owner"] is None  # released although the step never finished

    second = server_factory(env=env)
    restarted = time.monotonic()
    with second.client() as client:
        run = wait_for_run(client, run_id, timeout=30)
        items = client.get(f"/v1/runs/{run_id}/steps").json()["items"]
    assert time.monotonic() - restarted < 30  # well inside the 60 s lease
    assert run["status"] == "succeeded"
    assert [(s["seq"], s["node"]) for s in items] == [(1, "Counted"), (2, "Step")]
    assert _executions(log, run_id) == Counter({1: 2})  # lost once, redone once, committed once
