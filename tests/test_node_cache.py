"""Node result caching (issue: schedules, webhooks, fairness and caching).

Real servers: the local executor keeps entries in the run store (SQLite, PostgreSQL) or,
with REDIS_URL, in Redis; Celery workers keep them in Redis. A second run with the same
input runs ``exec`` zero times and its step says ``cached``; invalidation by flow or key
makes it run once more; a dead Redis is a miss, never a failed step.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests import celery_support as cs
from tests.security_support import bearer, cli_key
from tests.support import BIN, RedisServer, Server, wait_for_run

# fixtures shared by the Celery tests
pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker

ENV = {"POCKETRUN_FLOWS": "tests.edge_flows,tests.celery_support,tests.cache_flows"}


def _run(client: httpx.Client, flow: str, q: str, log: Path) -> tuple[dict, dict]:
    created = client.post(f"/v1/flows/{flow}/runs", json={"input": {"q": q, "log": str(log)}})
    assert created.status_code == 202, created.text
    run = wait_for_run(client, created.json()["id"], timeout=60)
    assert run["status"] == "succeeded", run
    steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
    assert len(steps) == 1, steps
    return run, steps[0]


def _execs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_cached_node_runs_exec_once_per_key_and_tenant(
    server_factory, db_url: str, tmp_path: Path
) -> None:
    server: Server = server_factory(ENV)
    log = tmp_path / "execs.log"
    a = httpx.Client(base_url=server.url, headers=bearer(cli_key(db_url, "consumer", "a")))
    b = httpx.Client(base_url=server.url, headers=bearer(cli_key(db_url, "consumer", "b")))
    operator = httpx.Client(base_url=server.url, headers=bearer(cli_key(db_url, "operator", "a")))
    with a, b, operator:
        first, step = _run(a, "cached", "x", log)
        assert not step["cached"] and step["attempts"] == 1
        again, step = _run(a, "cached", "x", log)
        assert step["cached"] and step["attempts"] == 0, step
        assert again["output"] == first["output"], (again, first)
        assert "answer to x" in str(again["output"])
        assert _execs(log) == ["x"]  # the second run executed exec zero times

        _run(a, "cached", "y", log)  # another input: a miss
        _run(b, "cached", "x", log)  # another tenant: its own entries
        assert _execs(log) == ["x", "y", "x"]
        for flow in ("cached-async", "cached-async"):  # the default key: prep_res as JSON
            _run(a, flow, "z", log)
        assert _execs(log).count("z") == 1

        # invalidation: a consumer may not; an operator by key, then by flow
        assert a.delete("/v1/cache", params={"flow": "cached"}).status_code == 403
        cleared = operator.delete("/v1/cache", params={"flow": "cached", "key": "y"})
        assert cleared.status_code == 200 and cleared.json() == {"removed": 1}, cleared.text
        _run(a, "cached", "x", log)  # still cached
        _run(a, "cached", "y", log)  # runs once more
        assert _execs(log)[3:] == ["z", "y"]
        cleared = operator.delete("/v1/cache", params={"flow": "cached"})
        assert cleared.json() == {"removed": 2}, cleared.text
        _, step = _run(a, "cached", "x", log)
        assert not step["cached"] and _execs(log)[-1] == "x" and len(_execs(log)) == 6
        _run(b, "cached", "x", log)  # tenant b's entry survived tenant a's invalidation
        assert len(_execs(log)) == 6
        assert operator.delete("/v1/cache", params={"flow": "c", "tenant": "b"}).status_code == 404

        # an entry past its TTL is a miss; a failed exec is never kept
        _run(a, "cached-short", "s", log)
        time.sleep(1.2)
        _, step = _run(a, "cached-short", "s", log)
        assert not step["cached"] and _execs(log).count("s") == 2
        for _ in range(2):
            created = a.post(
                "/v1/flows/cached-failing/runs", json={"input": {"q": "f", "log": str(log)}}
            )
            failed = wait_for_run(a, created.json()["id"], timeout=60)
            assert failed["status"] == "failed", failed
        assert _execs(log).count("f") == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_with_its_redis_stopped_runs_still_succeed(
    server_factory, db_url: str, tmp_path: Path
) -> None:
    cache_redis = RedisServer(tmp_path).start()
    try:
        server: Server = server_factory({**ENV, "POCKETRUN_REDIS_URL": cache_redis.url})
        log = tmp_path / "execs.log"
        with server.client() as client:
            _run(client, "cached", "x", log)
            _, step = _run(client, "cached", "x", log)
            assert step["cached"] and _execs(log) == ["x"]
            keys = redis.Redis.from_url(cache_redis.url).keys("pocketrun:cache:*")
            assert len(keys) == 1, keys  # kept in Redis, not in the database
            cache_redis.stop()
            for expected in (2, 3):  # no cache: every run executes, none fails
                _, step = _run(client, "cached", "x", log)
                assert not step["cached"] and len(_execs(log)) == expected
    finally:
        cache_redis.stop()


def test_workers_share_entries_through_redis(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    env = {**cs.worker_env(pg, redis_server.url), **ENV}
    server = cs.celery_server(pg, redis_server.url, start_worker, tmp_path, ENV, "cache-w")
    log = tmp_path / "execs.log"
    try:
        with server.client() as client:
            for _ in range(3):
                _, step = _run(client, "cached", "x", log)
            assert step["cached"] and step["worker"] == "cache-w"
            assert _execs(log) == ["x"]
            stored: Any = redis.Redis.from_url(redis_server.url).keys("pocketrun:cache:*")
            assert len(stored) == 1, stored
            cleared = client.delete("/v1/cache", params={"flow": "cached"})
            assert cleared.json() == {"removed": 1}, cleared.text
            _, step = _run(client, "cached", "x", log)
            assert not step["cached"] and _execs(log) == ["x", "x"]
            cli = subprocess.run(
                [str(BIN / "pocketrun"), "cache", "clear", "--flow", "cached"],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
            assert "removed 1 cache entry" in cli.stdout, cli.stdout
            _run(client, "cached", "x", log)
            assert _execs(log) == ["x", "x", "x"]
    finally:
        server.kill()


def test_celery_workers_with_their_cache_redis_stopped_still_succeed(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    cache_redis = RedisServer(tmp_path).start()
    env = {**cs.worker_env(pg, redis_server.url), **ENV}
    worker_env = {**ENV, "POCKETRUN_CACHE_REDIS_URL": cache_redis.url}
    start_worker("cache-down", concurrency=1, env=worker_env).wait_ready()
    server = Server(pg, env=env, log_path=tmp_path / "server.log").start()
    log = tmp_path / "execs.log"
    try:
        with server.client() as client:
            for _ in range(2):
                _, step = _run(client, "cached-async", "d", log)
            assert step["cached"] and step["worker"] == "cache-down", step
            assert _execs(log) == ["d"]
            keys = redis.Redis.from_url(cache_redis.url).keys("pocketrun:cache:*")
            assert len(keys) == 1, keys  # kept in the cache's own Redis
            cache_redis.stop()
            for expected in (2, 3):  # no cache: every run executes on the worker, none fails
                _, step = _run(client, "cached-async", "d", log)
                assert not step["cached"] and len(_execs(log)) == expected, step
    finally:
        server.kill()
        cache_redis.stop()
