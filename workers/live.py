"""The engine's side of a run's event stream: number what happens and hand it to a sink.

A sink is where live events go: the process's ``EventHub`` (embedded mode) or a Redis
stream (``workers.redis_events``, the distributed shape). ``LiveStep`` is one step's
share: it numbers the node's chunks and resets (``core.events.StepOutput``), and a node
calling ``emit`` from its thread publishes through the event loop, so a sink is only
ever called on the loop.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from core.events import (
    STEP_FINISHED,
    STEP_FINISHED_EVENT,
    STEP_STARTED,
    STEP_STARTED_EVENT,
    Event,
    StepOutput,
    event_id,
)
from db.store import StepRecord


class EventSink(Protocol):
    def publish(self, run_id: uuid.UUID, event: Event) -> None:
        """Called on the event loop, in event id order for a run."""


class LiveFeed(Protocol):
    cut: bool  # the reader fell too far behind: the stream ends, the client resumes

    def start(self, after: int) -> None:
        """The stream has sent the record up to event ``after``."""

    async def next(self, timeout: float) -> Event | None:
        """The next live event; None when ``timeout`` passes first."""

    def queued(self) -> Event | None:
        """The next live event if one is here already; never waits."""


class EventSource(Protocol):
    def subscribe(self, run_id: uuid.UUID) -> AbstractContextManager[LiveFeed]:
        """Enter before reading the record, ``start`` the feed after."""


class LiveStep:
    """One step's live events; ``close`` it when the step's calls are over, so a thread
    abandoned by a timeout can emit nothing more."""

    def __init__(
        self,
        sink: EventSink,
        run_id: uuid.UUID,
        seq: int,
        base: int,
        max_bytes: int,
    ) -> None:
        self.sink = sink
        self.run_id = run_id
        self.seq = seq
        self._base = base
        self._max_bytes = max_bytes
        self.output: StepOutput | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._closed = False

    def started(self, node: str, extra: dict[str, Any] | None = None) -> None:
        """The step's leaf node is known: publish ``step.started``, and a reset first when
        this delivery carries on a step an earlier process began (its base is past 2)."""
        self.output = StepOutput(self.seq, node, self._base, self._max_bytes, extra)
        data = {"seq": self.seq, "node": node, "attempt": 1, **(extra or {})}
        self._send(Event(event_id(self.seq, STEP_STARTED), STEP_STARTED_EVENT, data))
        if self._base > 2:
            self._reset(1)

    def emit(self, chunk: Any, size: int) -> None:
        self._record(lambda output: output.chunk(chunk, size))

    def progress(self, done: int, total: int) -> None:
        """A batch node finished ``done`` of its ``total`` items."""
        self._record(lambda output: output.progress(done, total))

    def retry(self, attempt: int) -> None:
        """The node's ``attempt``-th exec call begins: the stream resets."""
        self._reset(attempt)

    def _reset(self, attempt: int) -> None:
        self._record(lambda output: output.reset(attempt))

    def _record(self, make: Callable[[StepOutput], Event | None]) -> None:
        """Number an event under the lock (nodes emit from their threads), then send it."""
        with self._lock:
            if self._closed or self.output is None:
                return
            event = make(self.output)
        if event is not None:
            self._send(event)

    def close(self) -> dict[str, Any] | None:
        """No more events; the ``steps.output`` record of what was streamed."""
        with self._lock:
            self._closed = True
        return self.output.record() if self.output is not None else None

    def _send(self, event: Event) -> None:
        if threading.get_ident() == self._loop_thread:
            self.sink.publish(self.run_id, event)
        else:
            self._loop.call_soon_threadsafe(self.sink.publish, self.run_id, event)


def step_finished_event(step: StepRecord, output: Any, delta: Any) -> Event:
    """``step.finished`` with the step as its row reads back (``data["row"]``); ``output``
    and ``delta`` as JSON values (the record's may be encoded already)."""
    row = {
        "seq": step.seq,
        "node": step.node,
        "status": step.status,
        "attempts": step.attempts,
        "action": step.action,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "duration_ms": step.duration_ms,
        "worker": step.worker,
        "error": step.error,
        "output": output,
        "delta": delta,
        "cached": step.cached,
    }
    return Event(event_id(step.seq, STEP_FINISHED), STEP_FINISHED_EVENT, {"row": row})
