"""Send "advance run R" messages to the Celery workers without importing Celery.

The API never imports Celery (see DESIGN.md section 1), yet it must hand runs to the
workers. A Celery task message on the Redis broker is a small, stable JSON document
(Celery task protocol 2 inside kombu's Redis envelope), LPUSHed onto the queue's list, so
this module writes exactly that with redis-py. The workers (``workers.celery_app``) consume
it as any Celery task; a test checks the format against Celery's own.

Priorities: kombu's Redis transport keeps one list per priority step (``queue`` for 0,
``queue:N`` otherwise, with ``sep=":"`` and steps 0..9) and pops the lowest number first.
pocketrun's run priority is 0-9 with higher first, so a run with priority P goes to step
``9 - P``.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis

from workers.tracing import dispatching, trace_headers

TASK_NAME = "pocketrun.advance"
PRIORITY_SEP = ":"
PRIORITY_STEPS = list(range(10))
ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def broker_priority(priority: int) -> int:
    return 9 - max(0, min(9, int(priority)))


def queue_key(queue: str, priority: int) -> str:
    step = broker_priority(priority)
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def task_message(
    run_id: uuid.UUID | str, queue: str, priority: int, *, countdown: float = 0
) -> bytes:
    """The kombu/Celery message for ``advance(run_id)``, as kombu's Redis transport stores it."""
    task_id = str(uuid.uuid4())
    args = [str(run_id)]
    body = orjson.dumps(
        [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    eta = None
    if countdown > 0:
        eta = (datetime.now(UTC) + timedelta(seconds=countdown)).isoformat()
    message: dict[str, Any] = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": TASK_NAME,
            "id": task_id,
            "shadow": None,
            "eta": eta,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(args),
            "kwargsrepr": "{}",
            "origin": ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            **trace_headers(run_id),  # W3C traceparent: the worker's spans continue ours
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": None,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": broker_priority(priority),
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return orjson.dumps(message)


class Dispatcher:
    """Publishes advance messages onto the broker (a Redis server) with redis-py."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def publish(
        self, run_id: uuid.UUID | str, queue: str, priority: int = 0, *, countdown: float = 0
    ) -> None:
        with dispatching(run_id, queue):
            message = task_message(run_id, queue, priority, countdown=countdown)
            await self.client.lpush(queue_key(queue, priority), message)

    async def publish_many(self, items: Iterable[tuple[uuid.UUID, str, int]]) -> int:
        count = 0
        async with self.client.pipeline(transaction=False) as pipe:
            for run_id, queue, priority in items:
                pipe.lpush(queue_key(queue, priority), task_message(run_id, queue, priority))
                count += 1
            if count:
                await pipe.execute()
        return count

    async def depth(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting per queue (all priority steps), not counting unacked ones."""
        queues = list(queues)
        async with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = await pipe.execute()
        steps = len(PRIORITY_STEPS)
        return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}


def redis_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """A client that fails fast: losing Redis must cost speed, never stall a run."""
    options: dict[str, Any] = {
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
        "health_check_interval": 30,
        **kwargs,
    }
    return aioredis.Redis.from_url(url, **options)
