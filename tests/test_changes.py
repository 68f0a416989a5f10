"""The change feed behind long polls holds an entry only while someone waits on it.

Unit level on ``core.changes.ChangeFeed``, then end to end on a real server: a thousand
finished runs, each long-polled once until its wait runs out, leave no entry behind
(``pocketrun_change_waiters`` on /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from core.changes import ChangeFeed
from tests.support import Server

# ----------------------------------------------------------------------------------------
# the feed


async def _wait(feed: ChangeFeed, run_id: uuid.UUID, timeout: float) -> bool:
    with feed.watch(run_id) as changed:
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True


async def test_waits_that_time_out_leave_nothing_behind() -> None:
    feed = ChangeFeed()
    ids = [uuid.uuid4() for _ in range(200)]
    results = await asyncio.gather(*(_wait(feed, run_id, 0.01) for run_id in ids * 2))
    assert not any(results)
    assert feed.watched == 0


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    feed = ChangeFeed()
    task = asyncio.create_task(_wait(feed, uuid.uuid4(), 10))
    await asyncio.sleep(0.01)
    assert feed.watched == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert feed.watched == 0


async def test_the_entry_lives_until_the_last_waiter_leaves_and_publish_wakes_all() -> None:
    feed = ChangeFeed()
    run_id = uuid.uuid4()
    short = asyncio.create_task(_wait(feed, run_id, 0.01))
    long = [asyncio.create_task(_wait(feed, run_id, 10)) for _ in range(2)]
    assert await short is False
    assert feed.watched == 1  # the two others still wait
    feed.publish(run_id)
    assert await asyncio.gather(*long) == [True, True]
    assert feed.watched == 0


async def test_a_change_between_watch_and_wait_is_not_missed() -> None:
    feed = ChangeFeed()
    run_id = uuid.uuid4()
    with feed.watch(run_id) as changed:
        feed.publish(run_id)  # say, while the waiter reads the run
        await asyncio.wait_for(changed.wait(), 1)
        with feed.watch(run_id) as again:  # a new watch waits for the next change
            assert not again.is_set()
            assert feed.watched == 1
    assert feed.watched == 0


async def test_close_wakes_every_waiter() -> None:
    feed = ChangeFeed()
    waits = [asyncio.create_task(_wait(feed, uuid.uuid4(), 10)) for _ in range(3)]
    await asyncio.sleep(0.01)
    await feed.close()
    assert await asyncio.gather(*waits) == [True, True, True]
    assert feed.watched == 0


# ----------------------------------------------------------------------------------------
# a real server

RUNS = 1000
CLIENTS, CONNECTIONS = 10, 10  # 100 requests at a time (httpx is slow with one big pool)
GAUGE = re.compile(r"^pocketrun_change_waiters (\S+)$", re.MULTILINE)

Send = Callable[[httpx.AsyncClient, Any], Awaitable[httpx.Response]]


async def _each(clients: list[httpx.AsyncClient], send: Send, items: list) -> list[httpx.Response]:
    """``send(client, item)`` for every item, all the clients' connections busy at once."""
    gate = asyncio.Semaphore(len(clients) * CONNECTIONS)

    async def one(i: int, item: Any) -> httpx.Response:
        async with gate:
            return await send(clients[i % len(clients)], item)

    return await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))


async def _gauge(client: httpx.AsyncClient) -> float:
    match = GAUGE.search((await client.get("/metrics")).text)
    assert match, "/metrics has no pocketrun_change_waiters"
    return float(match.group(1))


async def _create(client: httpx.AsyncClient, i: int) -> httpx.Response:
    body = {"input": {"name": f"n{i}"}, "mode": "background"}
    return await client.post("/v1/flows/hello/runs", json=body)


async def _finished(client: httpx.AsyncClient, run_id: str) -> httpx.Response:
    return await client.get(f"/v1/runs/{run_id}?wait=30")  # answers when the run ends


async def _long_poll(client: httpx.AsyncClient, run: httpx.Response) -> httpx.Response:
    headers = {"If-None-Match": run.headers["etag"]}
    return await client.get(f"/v1/runs/{run.json()['id']}?wait=0.2", headers=headers)


async def test_long_polls_of_finished_runs_leave_no_feed_entries(server: Server) -> None:
    # Idle connections close before the server's 5 s keep-alive does: no race on reuse.
    limits = httpx.Limits(max_connections=CONNECTIONS, keepalive_expiry=1)
    async with contextlib.AsyncExitStack() as stack:
        metrics, *clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.url, headers=server.headers, timeout=60, limits=limits
                )
            )
            for _ in range(CLIENTS + 1)
        ]
        created = await _each(clients, _create, list(range(RUNS)))
        assert {r.status_code for r in created} == {202}, created[0].text
        runs = await _each(clients, _finished, [r.json()["id"] for r in created])
        assert {r.json()["status"] for r in runs} == {"succeeded"}
        assert await _gauge(metrics) == 0

        polls = asyncio.ensure_future(_each(clients, _long_poll, runs))
        seen: list[float] = []
        while not polls.done():
            seen.append(await _gauge(metrics))
            await asyncio.sleep(0.02)
        # Each poll matched the finished run's tag, so it waited its 0.2 s out: 304.
        assert {r.status_code for r in polls.result()} == {304}
        assert max(seen) > 0, "no long poll was seen waiting"
        assert await _gauge(metrics) == 0
