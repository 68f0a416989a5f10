"""1,000 runs across two Celery workers: all terminal, no step committed twice, none lost."""

from __future__ import annotations

import json

import pytest

from tests import celery_support as cs

pytestmark = pytest.mark.timeout(300)

# fixtures shared by the Celery tests
pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker

RUNS = 1000


def test_thousand_runs_across_two_workers(pg: str, redis_server, start_worker) -> None:
    for name in ("scale-a", "scale-b"):
        start_worker(name, concurrency=2).wait_ready()
    ids = cs.create_runs(pg, redis_server.url, [("celery-tiny", {})] * RUNS)
    rows = cs.wait_terminal(pg, ids, 240)
    assert len(rows) == RUNS
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    for row in rows.values():
        state = row["state"]
        state = json.loads(state) if isinstance(state, str) else state
        assert state == {"n": 1, "trail": ["end"]}  # a step applied twice would show here
    steps = cs.fetch(
        pg,
        "SELECT run_id, array_agg(node ORDER BY seq) AS nodes, array_agg(seq ORDER BY seq) AS seqs,"
        " array_agg(DISTINCT worker) AS workers FROM steps GROUP BY run_id",
    )
    assert len(steps) == RUNS
    workers: set[str] = set()
    for row in steps:
        assert list(row["seqs"]) == [1, 2]
        assert list(row["nodes"]) == ["Bump", "Step"]
        workers.update(row["workers"])
    assert workers == {"scale-a", "scale-b"}
    assert cs.fetch(pg, "SELECT * FROM flow_slots") == []
    assert cs.fetch(pg, "SELECT id FROM runs WHERE lease_owner IS NOT NULL") == []
