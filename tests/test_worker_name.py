"""`pocketrun worker --name NAME`: every step the worker runs records NAME as its worker."""

from __future__ import annotations

import pytest

from tests import celery_support as cs

pytestmark = pytest.mark.timeout(120)

# fixtures shared by the Celery tests
pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker


def test_steps_record_the_worker_name(pg: str, redis_server: cs.RedisServer, start_worker) -> None:
    start_worker("named-worker", concurrency=2).wait_ready()
    ids = cs.create_runs(pg, redis_server.url, [("celery-tiny", {})] * 3)
    rows = cs.wait_terminal(pg, ids, 60)
    assert {row["status"] for row in rows.values()} == {"succeeded"}
    for run_id in ids:
        steps = cs.steps_of(pg, run_id)
        assert len(steps) == 2
        assert {step["worker"] for step in steps} == {"named-worker"}
