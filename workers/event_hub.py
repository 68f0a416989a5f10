"""Live events fanned out to this process's subscribers, each with a bounded buffer.

The hub keeps, per run, the events of the block in progress (the running step's start
and output, since its last ``step.finished``) so a subscriber arriving mid-step gets
them; everything before is in the database. A subscriber whose buffer fills up (it
reads too slowly) is cut off: its buffer is dropped and it is told so, and it resumes
from the record with ``Last-Event-ID``. No subscriber can grow the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Iterator

from core.events import (
    RUN_FINISHED_EVENT,
    STEP_FINISHED_EVENT,
    Event,
)
from core.metrics import EVENT_SUBSCRIBERS, EVENT_SUBSCRIBERS_CUT

MAX_CURRENT_EVENTS = 10_000  # of one block kept for late subscribers (chunks are capped too)
FLUSH_DELAY = 0.005  # seconds an event of a burst may wait for the next to share its write


class Subscription:
    def __init__(self, limit: int, backlog: list[Event] | None = None) -> None:
        self.limit = limit
        self.cut = False
        # the block in progress when it subscribed: shared with the hub, not a copy, and
        # not counted against ``limit`` (only what arrives while the client lags is)
        self._backlog: deque[Event] = deque(backlog or ())
        self._events: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the reader, while it waits

    def start(self, after: int) -> None:
        """The stream has read the record up to ``after``; this feed buffers already."""

    def push(self, event: Event) -> None:
        """Queue ``event``; the reader is woken by ``wake`` (the hub's flush)."""
        if self.cut:
            return
        if len(self._events) >= self.limit:
            self.cut = True
            self._events.clear()
            EVENT_SUBSCRIBERS_CUT.inc()
            self.wake()
        else:
            self._events.append(event)

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def queued(self) -> Event | None:
        """The next event if one is waiting already, else None (never waits)."""
        if self.cut:
            return None
        if self._backlog:
            return self._backlog.popleft()
        return self._events.popleft() if self._events else None

    async def next(self, timeout: float) -> Event | None:
        """The next event; None when ``timeout`` passes first or once cut off."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while not self.cut:
            event = self.queued()
            if event is not None:
                return event
            left = until - loop.time()
            if left <= 0:
                break
            # a bare future and a timer: a wait per wake-up, cheap enough to be one per write
            # (a wake-up may find nothing: what it flushed was taken with queued() already)
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(left, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Channel:
    __slots__ = ("current", "flush", "subscribers", "woken")

    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()
        self.current: list[Event] = []
        self.flush: asyncio.TimerHandle | None = None
        self.woken = 0.0  # loop time of the last wake-up

    def wake(self) -> None:
        self.flush = None
        self.woken = asyncio.get_running_loop().time()
        for subscriber in self.subscribers:
            subscriber.wake()


class EventHub:
    """The sink of this process's engine, and where its event streams subscribe."""

    def __init__(self, buffer: int = 1000) -> None:
        self.buffer = buffer
        self._channels: dict[uuid.UUID, _Channel] = {}

    def publish(self, run_id: uuid.UUID, event: Event) -> None:
        channel = self._channels.get(run_id)
        if channel is None:
            if event.type in (STEP_FINISHED_EVENT, RUN_FINISHED_EVENT):
                return  # in the record now; nobody needs it held here
            channel = self._channels[run_id] = _Channel()
        if event.type == STEP_FINISHED_EVENT:
            channel.current.clear()
        elif event.type != RUN_FINISHED_EVENT and len(channel.current) < MAX_CURRENT_EVENTS:
            channel.current.append(event)
        if channel.subscribers:
            for subscriber in channel.subscribers:
                subscriber.push(event)
            # The first event after a quiet spell wakes the readers at once; one in a burst
            # (a fast run's steps, a model's tokens) waits up to FLUSH_DELAY to share a
            # write with the next instead of waking them once per event.
            if channel.flush is None:
                loop = asyncio.get_running_loop()
                if loop.time() - channel.woken >= FLUSH_DELAY:
                    channel.wake()
                else:
                    channel.flush = loop.call_later(FLUSH_DELAY, channel.wake)
        if not channel.subscribers and (event.type == RUN_FINISHED_EVENT or not channel.current):
            del self._channels[run_id]
        elif event.type == RUN_FINISHED_EVENT:
            channel.current.clear()

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[Subscription]:
        """Subscribe before reading the record: nothing published meanwhile is missed."""
        channel = self._channels.get(run_id)
        if channel is None:
            channel = self._channels[run_id] = _Channel()
        subscription = Subscription(self.buffer, channel.current)
        channel.subscribers.add(subscription)
        EVENT_SUBSCRIBERS.inc()
        try:
            yield subscription
        finally:
            channel.subscribers.discard(subscription)
            EVENT_SUBSCRIBERS.dec()
            if not channel.subscribers and not channel.current:
                self._channels.pop(run_id, None)
