"""EXECUTOR=celery end to end: real PostgreSQL, a private Redis, real `pocketrun worker`
processes, and a real `pocketrun serve` for the API paths."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import orjson
import pytest
import redis

from tests import celery_support as cs
from tests.edge_flows import EDGE_FLOWS, EXAMPLE_INPUTS, run_pocketflow
from tests.support import Server, wait_until
from workers.dispatch import queue_key, task_message

pytestmark = pytest.mark.timeout(240)

# fixtures shared by the Celery tests
pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def test_message_format_matches_celery(redis_server: cs.RedisServer) -> None:
    """The API's Celery-free dispatch writes what Celery itself would write."""
    from celery import Celery

    from workers.dispatch import PRIORITY_SEP, PRIORITY_STEPS

    app = Celery("check", broker=redis_server.url)
    app.conf.broker_transport_options = {
        "priority_steps": PRIORITY_STEPS,
        "sep": PRIORITY_SEP,
        "queue_order_strategy": "priority",
    }
    run_id = uuid.uuid4()
    app.send_task("pocketrun.advance", args=[str(run_id)], queue="q", priority=2)
    client = redis.Redis(port=redis_server.port)
    keys = [k.decode() for k in client.keys("q*")]
    assert keys == [queue_key("q", 7)]  # run priority 7 -> broker priority 2
    theirs = orjson.loads(client.lpop(keys[0]))
    ours = orjson.loads(task_message(run_id, "q", 7))
    assert set(ours) == set(theirs)
    assert set(ours["headers"]) >= set(theirs["headers"]) - {"ignore_result"}
    assert set(ours["properties"]) - {"reply_to"} == set(theirs["properties"]) - {"reply_to"}
    for field in ("content-type", "content-encoding"):
        assert ours[field] == theirs[field]
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    assert ours["properties"]["priority"] == theirs["properties"]["priority"]
    import base64

    assert orjson.loads(base64.b64decode(ours["body"]))[:2] == [[str(run_id)], {}]
    assert ours["headers"]["task"] == theirs["headers"]["task"]


def test_every_flow_on_workers_equals_pocketflow(pg: str, redis_server, start_worker) -> None:
    """Every example and edge-case flow run on two workers ends with pocketflow's store."""
    workers = [start_worker("eq-a"), start_worker("eq-b")]
    for worker in workers:
        worker.wait_ready()
    cases = [*EDGE_FLOWS, *EXAMPLE_INPUTS]
    ids = cs.create_runs(pg, redis_server.url, cases)
    rows = cs.wait_terminal(pg, ids, timeout=120)
    for run_id, (flow, data) in zip(ids, cases, strict=True):
        row = rows[run_id]
        assert row["status"] == "succeeded", (flow, data, row["error"])
        expected_store, expected_path = run_pocketflow(flow, data)
        assert _json(row["state"]) == expected_store, (flow, data)
        steps = cs.steps_of(pg, run_id)
        assert [s["node"] for s in steps] == expected_path, (flow, data)
        assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
        assert {s["worker"] for s in steps} <= {"eq-a", "eq-b"}
        assert row["lease_owner"] is None
    # the live copies in Redis agree with the database's record
    client = redis.Redis(port=redis_server.port)
    seen = 0
    for run_id in ids:
        raw = client.hgetall(f"pocketrun:run:{{{run_id}}}")
        if raw:
            seen += 1
            values = {k[2:].decode(): orjson.loads(v) for k, v in raw.items() if k != b"#seq"}
            assert values == _json(rows[run_id]["state"])
            assert 0 < client.pttl(f"pocketrun:run:{{{run_id}}}") <= 300_000  # finished: expiring
    assert seen > len(ids) // 2


def test_priority_orders_the_queue(pg: str, redis_server, start_worker) -> None:
    """Messages wait in the broker; the highest-priority run starts first."""
    low = cs.create_runs(pg, redis_server.url, [("celery-tiny", {})] * 5, priority=0)
    high = cs.create_runs(pg, redis_server.url, [("celery-tiny", {})], priority=9)
    start_worker("prio").wait_ready()
    rows = cs.wait_terminal(pg, low + high)
    first = min(rows.values(), key=lambda r: r["started_at"])
    assert first["id"] == high[0]


def _server(pg: str, redis_url: str, tmp_path: Path, **env: str) -> Server:
    server = Server(
        pg,
        env={
            **cs.worker_env(pg, redis_url),
            "POCKETRUN_INLINE_BUDGET": "0.5",
            "POCKETRUN_READY_MIN_WORKERS": "1",
            **env,
        },
        log_path=tmp_path / "server.log",
    )
    return server.start()


def test_api_hands_runs_to_workers_and_readyz_counts_them(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    server = _server(pg, redis_server.url, tmp_path)
    try:
        with server.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503  # POCKETRUN_READY_MIN_WORKERS=1, none alive
            assert ready.json()["checks"]["executor"]["workers"] == 0
            start_worker("api-w", concurrency=2).wait_ready()
            body = wait_until(
                lambda: (r := client.get("/readyz")).status_code == 200 and r.json(),
                20,
                0.2,
                "readyz",
            )
            executor = body["checks"]["executor"]
            assert executor["redis"] == "ok" and executor["broker"] == "ok"
            assert executor["workers"] == 1 and executor["worker_processes"] == 2
            # a background run, waited for through the workers' change notifications
            created = client.post("/v1/flows/pipeline/runs?wait=30", json={"input": {"value": 3}})
            assert created.status_code == 201, created.text
            run = created.json()
            assert run["status"] == "succeeded"
            steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
            assert {s["worker"] for s in steps} == {"api-w"}
            # an inline run that outgrows its budget (0.5 s) goes on on the workers
            log = tmp_path / "inline.log"
            created = client.post(
                "/v1/flows/edge-counted/runs?wait=0",
                json={"input": {"steps": 8, "delay": 0.2, "log": str(log)}, "mode": "inline"},
            )
            assert created.status_code == 202, created.text
            run_id = created.json()["id"]
            run = wait_until(
                lambda: (
                    (r := client.get(f"/v1/runs/{run_id}?wait=5").json())["status"] == "succeeded"
                    and r
                ),
                60,
                0.1,
                "the inline run to finish",
            )
            steps = client.get(f"/v1/runs/{run_id}/steps").json()["items"]
            workers = [s["worker"] for s in steps]
            assert workers[0].startswith("api:")
            assert workers[-1] == "api-w"
            assert len(log.read_text().splitlines()) == 8  # no step ran twice
    finally:
        server.stop()


def test_pocketrun_workers_lists_live_workers(pg: str, redis_server, start_worker) -> None:
    import subprocess

    from tests.support import BIN, ROOT

    start_worker("listed", concurrency=2).wait_ready()
    out = subprocess.run(
        [str(BIN / "pocketrun"), "workers"],
        cwd=ROOT,
        env={**cs.Worker("x", pg, redis_server.url).env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "listed" in out.stdout
    assert "1 worker(s) alive, 2 process(es)" in out.stdout


def test_redis_store_is_rebuilt_from_the_database(pg: str, redis_server, start_worker) -> None:
    """A run whose Redis copy is lost or wrong carries on from the database's record."""
    log_dir = Path(redis_server.workdir)
    log = log_dir / "rebuild.log"
    ids = cs.create_runs(
        pg, redis_server.url, [("edge-counted", {"steps": 12, "delay": 0.15, "log": str(log)})]
    )
    client = redis.Redis(port=redis_server.port)
    key = f"pocketrun:run:{{{ids[0]}}}"
    worker = start_worker(
        "rb", env={"POCKETRUN_TIME_SLICE": "0.3"}
    )  # many slices: every one reloads the store
    worker.wait_ready()
    wait_until(lambda: client.exists(key), 30, 0.05, "the run's store in Redis")
    # a wrong copy under a seq the database never had: the fence must refuse it
    client.hset(key, mapping={"k:count": b"999", "#seq": b"-5"})
    time.sleep(0.5)
    client.delete(key)  # and lose it outright
    rows = cs.wait_terminal(pg, ids, 60)
    row = rows[ids[0]]
    assert row["status"] == "succeeded", row["error"]
    assert _json(row["state"])["count"] == 12
    steps = cs.steps_of(pg, ids[0])
    assert len(steps) == 13
    assert len(log.read_text().splitlines()) == 12
