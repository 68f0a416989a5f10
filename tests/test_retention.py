"""Retention on both databases: finished runs older than RETENTION_DAYS go with their steps
and idempotency keys, in small transactions; unfinished and recent runs, and the audit log,
stay; the deleted-runs counter moves; a server does it on its own."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY as PROMETHEUS
from sqlalchemy import func, select, update

from core.ids import uuid7
from db.models import audit_log, idempotency_keys, runs, steps
from db.store import Idempotency, NewRun, RunStore
from db.types import utcnow
from flows.registry import REGISTRY
from tests.support import Server, wait_for_run, wait_until
from tests.test_equivalence import advance_once, create_run, settings_for
from workers.engine import Outcome
from workers.retention import Retention, batches
from workers.supervisor import Supervisor

pytestmark = pytest.mark.filterwarnings("ignore:Flow ends")


def deleted_total() -> float:
    return PROMETHEUS.get_sample_value("pocketrun_runs_deleted_total") or 0.0


async def finished_run(db: RunStore, name: str = "long", data: dict | None = None) -> uuid.UUID:
    run_id = await create_run(db, name, data if data is not None else {"steps": 3, "delay": 0})
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    return run_id


async def keyed_run(db: RunStore, key: str) -> uuid.UUID:
    spec = REGISTRY.get("long")
    row, created = await db.create(
        NewRun(
            tenant="t1",
            principal="tester",
            flow=spec.name,
            flow_version=spec.version,
            graph_hash=spec.graph_hash,
            mode="background",
            queue=spec.queue,
            priority=0,
            input=spec.validate_input({"steps": 2, "delay": 0}),
            metadata={},
        ),
        Idempotency(key, "h" * 64, 86400),
    )
    assert created
    assert await advance_once(db, row["id"], settings_for(db)) is Outcome.finished
    return row["id"]


async def age_created(db: RunStore, run_ids: list[uuid.UUID], days: float) -> None:
    then = utcnow() - timedelta(days=days)
    async with db.sa.write() as conn:
        await conn.execute(update(runs).where(runs.c.id.in_(run_ids)).values(created_at=then))


async def ended_ago(db: RunStore, run_id: uuid.UUID, days: float) -> None:
    then = utcnow() - timedelta(days=days)
    async with db.sa.write() as conn:
        await conn.execute(update(runs).where(runs.c.id == run_id).values(finished_at=then))


async def count(db: RunStore, table, column, run_ids: list[uuid.UUID]) -> int:
    async with db.sa.read() as conn:
        query = select(func.count()).select_from(table).where(column.in_(run_ids))
        return int((await conn.execute(query)).scalar_one())


async def audit(db: RunStore, run_id: uuid.UUID) -> None:
    await db.insert_rows(
        (
            audit_log,
            {
                "id": uuid7(),
                "at": utcnow(),
                "tenant": "t1",
                "principal": "tester",
                "role": "admin",
                "action": "run.create",
                "target": str(run_id),
                "status": 201,
                "request_id": None,
                "detail": None,
            },
        )
    )


def test_batches_keep_each_transaction_to_about_max_steps_rows() -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    found = [(ids[0], 1), (ids[1], 2), (ids[2], 9), (ids[3], 0), (ids[4], 1)]
    assert [[run_id for run_id, _ in group] for group in batches(found, 5)] == [
        [ids[0], ids[1]],  # 2 + 3 rows
        [ids[2]],  # 10 rows: alone (its steps go in chunks first)
        [ids[3], ids[4]],
    ]


async def test_old_finished_runs_go_with_their_steps_and_keys_and_the_rest_stays(db) -> None:
    old_ok = await finished_run(db)  # 4 steps
    old_failed = await finished_run(db, "edge-boom", {})
    old_long = await finished_run(db, data={"steps": 11, "delay": 0})  # more than a chunk
    old_keyed = await keyed_run(db, "key-1")
    old_cancelled = await create_run(db, "long", {"steps": 3, "delay": 0})
    await db.cancel(old_cancelled)
    recent = await finished_run(db)
    old_running = await create_run(db, "long", {"steps": 3, "delay": 0})
    assert await advance_once(db, old_running, settings_for(db), budget=0) is Outcome.yielded
    old_queued = await create_run(db, "long", {"steps": 3, "delay": 0})
    doomed = [old_ok, old_failed, old_long, old_keyed, old_cancelled]
    kept = [recent, old_running, old_queued]
    for run_id in doomed:
        await ended_ago(db, run_id, 10)
    await age_created(db, [old_running, old_queued], 10)
    await ended_ago(db, recent, 0.5)
    for run_id in doomed + kept:
        await audit(db, run_id)
    assert await count(db, steps, steps.c.run_id, [old_long]) == 12

    before = deleted_total()
    settings = settings_for(db, retention_days=1, retention_batch=2, retention_batch_steps=5)
    assert await Retention(db, settings).run_once() == len(doomed)
    assert deleted_total() - before == len(doomed)

    for run_id in doomed:
        assert await db.get(run_id) is None
    assert await count(db, steps, steps.c.run_id, doomed) == 0
    assert await count(db, idempotency_keys, idempotency_keys.c.run_id, doomed) == 0
    assert [(await db.get(run_id))["id"] for run_id in kept] == kept
    assert await count(db, steps, steps.c.run_id, [recent]) == 4
    assert await count(db, audit_log, audit_log.c.target, [str(r) for r in doomed + kept]) == 8
    assert await Retention(db, settings).run_once() == 0  # nothing left to do


async def test_a_pass_stops_when_it_loses_its_lock(db) -> None:
    ids = [await finished_run(db) for _ in range(3)]
    for run_id in ids:
        await ended_ago(db, run_id, 3)
    settings = settings_for(db, retention_days=1, retention_batch=1)
    answers = iter([True, False])

    async def still_ours() -> bool:
        return next(answers)

    assert await Retention(db, settings, still_ours=still_ours).run_once() == 1
    assert sum([await db.get(run_id) is None for run_id in ids]) == 1


@pytest.mark.parametrize("days", [0, 1])
async def test_the_supervisor_of_a_sweeping_process_retains_only_when_days_are_set(
    db, days: int
) -> None:
    run_id = await finished_run(db)
    await ended_ago(db, run_id, 3650)
    settings = settings_for(db, retention_days=days)

    async def sweep(first: bool) -> None:
        pass

    supervisor = Supervisor(db, settings, owner="o", active=list, sweep=sweep)
    await supervisor.tick()
    if supervisor._retention is not None:
        await supervisor._retention
    await supervisor.stop()
    assert (await db.get(run_id) is None) is bool(days)


def test_a_server_deletes_old_finished_runs_on_its_own_and_counts_them(server_factory) -> None:
    env = {"POCKETRUN_RETENTION_DAYS": str(2 / 86400), "POCKETRUN_RETENTION_INTERVAL": "0.2"}
    server: Server = server_factory(env)
    with server.client() as client:
        done = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "x"}})
        assert done.status_code == 201, done.text
        run_id = done.json()["id"]
        slow = client.post(
            "/v1/flows/long/runs",
            json={"input": {"steps": 100, "delay": 0.1}, "mode": "background"},
        )
        assert slow.status_code in (201, 202), slow.text
        slow_id = slow.json()["id"]
        started = time.monotonic()
        wait_until(lambda: client.get(f"/v1/runs/{run_id}").status_code == 404, timeout=15)
        assert time.monotonic() - started > 1  # not before it was 2 s old
        assert client.get(f"/v1/runs/{slow_id}").json()["status"] in ("queued", "running")
        metrics = client.get("/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("pocketrun_runs_deleted_total"))
        assert float(line.split()[-1]) >= 1
        client.post(f"/v1/runs/{slow_id}/cancel")
        wait_for_run(client, slow_id)
