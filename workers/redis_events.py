"""Run events over Redis streams: the distributed shape's live feed, read by any API process.

Each run has a stream, ``pocketrun:events:<run id>``, whose entry ids are the events' own
ids (``<id>-0``), so a reader resumes with ``XREAD`` from the last id it sent, and an
event a redone claim publishes again under the same id (``run.status``, ``step.started``)
is refused by Redis as not newer: published once. Writes are queued and sent in order,
pipelined, by one task; a lost write costs only latency, since the database holds every
committed event and streams read it again when their feed goes quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog

from core.events import RUN_FINISHED_EVENT, Event
from core.settings import Settings

log = structlog.get_logger("pocketrun.redis_events")

MAX_LENGTH = 20_000  # entries kept per run's stream (approximately)
BATCH = 200
READ_COUNT = 100
MAX_BLOCK = 4.0  # below the client's socket timeout


def events_key(run_id: uuid.UUID) -> str:
    return f"pocketrun:events:{run_id}"


class RedisFeed:
    """One event stream's live feed: ``start(after)`` once the record is read."""

    def __init__(self, client: aioredis.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self.cut = False  # a reader of Redis falls behind into Redis, not into memory
        self._position: str | None = None
        self._buffer: deque[Event] = deque()

    def start(self, after: int) -> None:
        self._position = f"{after}-0"

    def queued(self) -> Event | None:
        return self._buffer.popleft() if self._buffer else None

    async def next(self, timeout: float) -> Event | None:
        if self._buffer:
            return self._buffer.popleft()
        if self._position is None:
            raise RuntimeError("start() the feed first")
        try:
            found = await self.client.xread(
                {self.key: self._position},
                count=READ_COUNT,
                block=int(min(timeout, MAX_BLOCK) * 1000),
            )
        except Exception as exc:  # Redis away: the record backstops the stream
            log.debug("reading run events failed", error=repr(exc))
            await asyncio.sleep(min(timeout, MAX_BLOCK))
            return None
        for _, entries in found or ():
            for entry_id, fields in entries:
                self._position = entry_id.decode()
                number = int(self._position.split("-", 1)[0])
                data = orjson.loads(fields[b"d"])
                self._buffer.append(Event(number, fields[b"t"].decode(), data))
        return self._buffer.popleft() if self._buffer else None


class RedisEvents:
    """Sink for an engine (``publish``) and source for event streams (``subscribe``)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self._ttl_ms = int(settings.redis_store_ttl * 1000)
        self._finished_ttl_ms = int(settings.redis_finished_ttl * 1000)
        self._pending: deque[tuple[uuid.UUID, Event]] = deque()
        self._sender: asyncio.Task | None = None

    def publish(self, run_id: uuid.UUID, event: Event) -> None:
        self._pending.append((run_id, event))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            pipe = self.client.pipeline(transaction=False)
            for run_id, event in batch:
                key = events_key(run_id)
                data = orjson.dumps(event.data, option=orjson.OPT_UTC_Z)  # times as the API
                fields: Any = {"t": event.type, "d": data}
                pipe.xadd(key, fields, id=f"{event.id}-0", maxlen=MAX_LENGTH, approximate=True)
                finished = event.type == RUN_FINISHED_EVENT
                pipe.pexpire(key, self._finished_ttl_ms if finished else self._ttl_ms)
            try:
                await pipe.execute(raise_on_error=False)  # "not newer": published already
            except Exception as exc:
                log.debug("publishing run events failed", error=repr(exc))

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait briefly for queued events (a Celery task's loop stops when it returns)."""
        if self._sender is not None and not self._sender.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._sender), timeout)

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[RedisFeed]:
        yield RedisFeed(self.client, events_key(run_id))
