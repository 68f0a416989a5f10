"""Rate limits: 429 with Retry-After and RateLimit headers; one budget across two API
processes that share a Redis (a private redis-server on a free port)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.support import TEST_AUTH, RedisServer


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    server = RedisServer(tmp_path).start()
    yield server.url
    server.stop()


def test_limit_answers_429_with_headers(server_factory) -> None:
    server = server_factory({"POCKETRUN_RATE_LIMIT": "5/minute"})
    with server.client() as client:
        statuses = []
        for _ in range(5):
            response = client.get("/v1/flows")
            statuses.append(response.status_code)
            assert response.headers["ratelimit-limit"] == "5"
        assert statuses == [200] * 5
        assert response.headers["ratelimit-remaining"] == "0"
        limited = client.get("/v1/flows")
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["ratelimit-remaining"] == "0"
        assert int(limited.headers["ratelimit-reset"]) <= 60
        # unauthenticated calls are limited per client IP, apart from the key's budget
        anonymous = [httpx.get(server.url + "/v1/flows").status_code for _ in range(7)]
        assert anonymous == [401] * 5 + [429] * 2
        # open endpoints are not limited
        assert client.get("/healthz").status_code == 200


def test_two_api_processes_share_one_budget_through_redis(server_factory, redis_url) -> None:
    env = {"POCKETRUN_RATE_LIMIT": "30/minute", "POCKETRUN_REDIS_URL": redis_url}
    first, second = server_factory(env), server_factory(env)

    def call(i: int) -> int:
        target = first if i % 2 else second
        return httpx.get(target.url + "/v1/flows", headers=TEST_AUTH, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(call, range(80)))
    assert statuses.count(200) == 30, statuses
    assert statuses.count(429) == 50
    assert redis.Redis.from_url(redis_url).keys("pocketrun:rl*")
