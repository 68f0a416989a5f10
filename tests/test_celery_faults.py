"""Faults and control on the Celery executor: SIGKILL a worker, restart Redis, redelivery
cap, Celery's soft time limit, cancel, and the per-flow concurrency limit."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from db.store import open_store
from tests import celery_support as cs
from tests.support import wait_until

pytestmark = pytest.mark.timeout(180)

# fixtures shared by the Celery tests
pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _cancel(url: str, run_id) -> None:
    async def main() -> None:
        db = open_store(url)
        try:
            await db.cancel(run_id)
        finally:
            await db.close()

    asyncio.run(main())


def _nothing_held(url: str) -> None:
    assert cs.fetch(url, "SELECT * FROM flow_slots") == []
    leased = cs.fetch(url, "SELECT id FROM runs WHERE lease_owner IS NOT NULL")
    assert leased == []


def test_sigkill_worker_mid_run_finishes_on_the_other(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    log = tmp_path / "counted.log"
    first, second = start_worker("kill-a"), start_worker("kill-b")
    first.wait_ready()
    second.wait_ready()
    (run_id,) = cs.create_runs(
        pg, redis_server.url, [("celery-counted", {"steps": 40, "delay": 0.08, "log": str(log)})]
    )
    steps = wait_until(
        lambda: (s := cs.steps_of(pg, run_id)) and len(s) >= 6 and s,
        30,
        0.05,
        "some steps to commit",
    )
    holder = {"kill-a": first, "kill-b": second}[steps[-1]["worker"]]
    holder.kill()  # the whole worker: Celery parent and pool process
    committed = {s["seq"] for s in cs.steps_of(pg, run_id)}  # nothing commits after the kill
    assert committed and max(committed) < 40
    rows = cs.wait_terminal(pg, [run_id], 60)
    row = rows[run_id]
    assert row["status"] == "succeeded", row["error"]
    assert _json(row["state"])["count"] == 40
    steps = cs.steps_of(pg, run_id)
    assert [s["seq"] for s in steps] == list(range(1, 42))
    assert {s["worker"] for s in steps} == {"kill-a", "kill-b"}
    executed = Counter(line.split(":")[1] for line in _lines(log))
    for seq in committed:
        assert executed[str(seq)] == 1, f"committed step {seq} ran {executed[str(seq)]} times"
    assert sum(executed.values()) <= 41  # at most the step in flight ran twice
    assert all(n == 1 for s, n in executed.items() if int(s) != max(committed) + 1)
    _nothing_held(pg)


def test_redis_restart_mid_batch_loses_no_run(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    log = tmp_path / "batch.log"
    for name in ("rr-a", "rr-b"):
        start_worker(name).wait_ready()
    ids = cs.create_runs(
        pg,
        redis_server.url,
        [("edge-counted", {"steps": 5, "delay": 0.05, "log": str(log)})] * 40,
    )
    wait_until(
        lambda: cs.fetch(pg, "SELECT count(*) AS n FROM steps")[0]["n"] >= 30,
        30,
        0.05,
        "the batch to be under way",
    )
    redis_server.restart(down_for=1.0)  # queues, unacked messages and live stores: all gone
    rows = cs.wait_terminal(pg, ids, 90)
    for run_id in ids:
        row = rows[run_id]
        assert row["status"] == "succeeded", row["error"]
        assert _json(row["state"])["count"] == 5
        assert [s["seq"] for s in cs.steps_of(pg, run_id)] == list(range(1, 7))
    _nothing_held(pg)


def test_redelivery_cap_fails_a_run_that_keeps_killing_its_worker(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    log = tmp_path / "suicide.log"
    start_worker(
        "cap", env={"POCKETRUN_MAX_DELIVERIES": "2", "POCKETRUN_LEASE_TTL": "1.5"}
    ).wait_ready()
    (run_id,) = cs.create_runs(pg, redis_server.url, [("celery-suicide", {"log": str(log)})])
    rows = cs.wait_terminal(pg, [run_id], 90)
    row = rows[run_id]
    assert row["status"] == "failed"
    assert _json(row["error"])["type"] == "delivery_cap"
    assert 2 <= len(_lines(log)) <= 3  # killed on each delivery, then stopped for good
    _nothing_held(pg)


@pytest.mark.parametrize("flow", ["celery-block", "celery-block-sync"])
def test_soft_time_limit_ends_the_run_timed_out_without_retries(
    flow: str, pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    """A node past Celery's soft time limit ends the run timed_out. The async node blocks
    the event loop, so only the signal can stop it, and its 3 retries must not run."""
    log = tmp_path / "block.log"
    start_worker(
        "soft", env={"POCKETRUN_TASK_SOFT_TIME_LIMIT": "2", "POCKETRUN_TIME_SLICE": "0.5"}
    ).wait_ready()
    started = time.monotonic()
    (run_id,) = cs.create_runs(pg, redis_server.url, [(flow, {"log": str(log), "seconds": 8})])
    rows = cs.wait_terminal(pg, [run_id], 30)
    assert time.monotonic() - started < 7  # ended by the limit, not by the node returning
    row = rows[run_id]
    assert row["status"] == "timed_out", row["error"]
    error = _json(row["error"])
    assert error["type"] == "timed_out" and error["node"] in ("BlockingAsync", "BlockingSync")
    (step,) = cs.steps_of(pg, run_id)
    assert step["status"] == "timed_out" and step["worker"] == "soft"
    assert len(_lines(log)) == 1  # executed once: no retry swallowed the limit
    _nothing_held(pg)
    # the worker process carries on with other runs
    ids = cs.create_runs(pg, redis_server.url, [("celery-tiny", {})])
    assert cs.wait_terminal(pg, ids, 30)[ids[0]]["status"] == "succeeded"


def test_cancel_stops_a_running_run_and_a_queued_one(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    log = tmp_path / "cancel.log"
    # queued: cancelled at once, and the worker that later gets its message does nothing
    (queued,) = cs.create_runs(
        pg, redis_server.url, [("edge-counted", {"steps": 5, "delay": 0, "log": str(log)})]
    )
    _cancel(pg, queued)
    assert cs.run_rows(pg, [queued])[queued]["status"] == "cancelled"
    start_worker("cancel").wait_ready()
    (running,) = cs.create_runs(
        pg, redis_server.url, [("edge-counted", {"steps": 300, "delay": 0.05, "log": str(log)})]
    )
    wait_until(lambda: len(cs.steps_of(pg, running)) >= 3, 30, 0.05, "the run to start")
    _cancel(pg, running)
    rows = cs.wait_terminal(pg, [running], 10)
    row = rows[running]
    assert row["status"] == "cancelled"
    assert len(cs.steps_of(pg, running)) < 50
    time.sleep(1)
    assert cs.steps_of(pg, queued) == []
    assert not any(line.startswith(str(queued)) for line in _lines(log))
    _nothing_held(pg)


def test_concurrency_limit_keeps_runs_of_a_flow_apart(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    log = tmp_path / "intervals.log"
    for name in ("lim-a", "lim-b"):
        start_worker(name, concurrency=2).wait_ready()
    ids = cs.create_runs(
        pg,
        redis_server.url,
        [("celery-limited", {"log": str(log), "seconds": 0.15, "steps": 3})] * 4,
    )
    rows = cs.wait_terminal(pg, ids, 60)
    assert all(r["status"] == "succeeded" for r in rows.values())
    intervals = []
    for line in _lines(log):
        run, start, end = line.split()
        intervals.append((float(start), float(end), run))
    assert len(intervals) == 12
    for start, end, run in intervals:
        for other_start, other_end, other in intervals:
            if run != other:
                assert end <= other_start or other_end <= start, "runs of the flow overlapped"
    _nothing_held(pg)
