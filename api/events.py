"""One run's event stream: the record replayed from the database, then live events.

The stream subscribes to the process's ``EventHub`` before it reads the record, so
nothing committed meanwhile falls between the two; every event id is recomputed from
the record the same way the engine numbered it live (``core.events``), and only ids past
the last one sent go out: no gap, no duplicate, whichever process the client reconnects
to. When no live event comes for a while (the run advances in another process, or the
run waits) the stream reads the record again, backing off up to ``POLL_MAX`` seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from api.schemas import RunOut
from api.serialize import json_body, run_data, step_data
from core.events import (
    RUN_FINISHED_EVENT,
    RUN_STATUS,
    RUN_STATUS_EVENT,
    RUN_WAITING_EVENT,
    STEP_FINISHED,
    STEP_FINISHED_EVENT,
    STEP_STARTED,
    STEP_STARTED_EVENT,
    STOPPED_STATUS,
    WAITING,
    WAITING_STATUS,
    Event,
    block_of,
    event_id,
    replay_output,
    run_finished_id,
    started_extra,
)
from core.jsonutil import dumps, loads
from db.store import STOPPED, TERMINAL, RunStore
from workers.live import EventSource

PAGE = 500  # steps read from the record at a time
POLL_MIN, POLL_MAX = 0.5, 5.0
CUT_EVENT = "stream.cut"


class RunEventStream:
    def __init__(
        self,
        store: RunStore,
        hub: EventSource,
        run: dict[str, Any],
        *,
        internals: bool,
        debug: bool,
        stopping: Callable[[], bool],
    ) -> None:
        self.store = store
        self.hub = hub
        self.run = run
        self.run_id: uuid.UUID = run["id"]
        self.internals = internals  # flows:internals: where steps ran
        self.debug = debug  # runs:internals: tracebacks and deltas
        self.stopping = stopping
        self.last = 0  # the id of the last event sent
        self._steps_read = 0  # the record has been read up to this step

    async def events(self, after: int) -> AsyncIterator[bytes]:
        """SSE messages for events with id > ``after``, until ``run.finished``."""
        self.last = after
        self._steps_read = max(block_of(after) - 1, 0)
        with self.hub.subscribe(self.run_id) as live:
            async for message in self._from_record():
                yield message
            live.start(self.last)
            poll = POLL_MIN
            while True:
                if self.run["status"] in TERMINAL:  # and the record is read to its end
                    finished = self._finished()
                    if finished is not None:
                        yield finished
                    return
                if self.stopping():
                    return
                event = await live.next(poll)
                if live.cut:
                    yield self._cut()
                    return
                if event is None or event.type == RUN_FINISHED_EVENT:
                    # quiet, or over: read the record (and the run) again
                    poll = min(poll * 2, POLL_MAX) if event is None else POLL_MIN
                    async for message in self._from_record():
                        yield message
                    continue
                poll = POLL_MIN
                # what is queued already goes out in one write
                frames = []
                while event is not None and event.type != RUN_FINISHED_EVENT:
                    if event.id > self.last:
                        if event.type == STEP_FINISHED_EVENT:
                            self._steps_read = max(self._steps_read, block_of(event.id))
                        frames.append(self._sse(event))
                    event = live.queued()
                if frames:
                    yield b"".join(frames)
                if event is not None:  # run.finished: read the end from the record
                    async for message in self._from_record():
                        yield message

    async def messages(self, after: int) -> AsyncIterator[tuple[int | None, str, Any]]:
        """The same events as ``events`` as ``(id, type, data)``, for an in-process reader
        (the CLI's live view): exactly what an SSE client gets, step and run JSON included."""
        async for written in self.events(after):  # one write may hold several messages
            for message in written.split(b"\r\n\r\n"):
                if message:
                    yield unframe(message)

    async def _from_record(self) -> AsyncIterator[bytes]:
        """What the record holds past the last event sent; refreshes ``self.run``."""
        self.run = dict(await self.store.get(self.run_id) or self.run)
        rows = await self._page()
        # Steps may have been committed after the run was read: they started it as well.
        if self.last < event_id(1, RUN_STATUS) and (self.run["started_at"] is not None or rows):
            if rows and self._steps_read == 0:
                first = rows[0]["node"]
            else:
                earliest = await self.store.steps(self.run_id, limit=1)
                first = earliest[0]["node"] if earliest else self.run["current_node"]
            data = {"status": "running", "current_node": first}
            yield self._sse(Event(event_id(1, RUN_STATUS), RUN_STATUS_EVENT, data))
        while True:
            for row in rows:
                frames = [self._sse(e) for e in self._step_events(row) if e.id > self.last]
                self._steps_read = row["seq"]
                if frames:
                    yield b"".join(frames)
            if len(rows) < PAGE:
                for event in self._stopped_events():
                    if event.id > self.last:
                        yield self._sse(event)
                return
            rows = await self._page()

    def _stopped_events(self) -> list[Event]:
        """A run that holds nothing now (waiting, sleeping, paused): what the engine said
        live when it stopped, as the record shows it."""
        status, seq = self.run["status"], self.run["seq"]
        if self._steps_read < seq or status not in STOPPED:
            return []
        if status == "waiting" and self.run["waiting_for"] is not None:
            waiting_for = self.run["waiting_for"]
            node = waiting_for["node"]
            started = {"seq": seq + 1, "node": node, "attempt": 1}
            data = {"status": status, "current_node": node}
            return [
                Event(event_id(seq + 1, STEP_STARTED), STEP_STARTED_EVENT, started),
                Event(event_id(seq + 1, WAITING_STATUS), RUN_STATUS_EVENT, data),
                Event(event_id(seq + 1, WAITING), RUN_WAITING_EVENT, dict(waiting_for)),
            ]
        data = {"status": status, "current_node": None}
        return [Event(event_id(seq, STOPPED_STATUS), RUN_STATUS_EVENT, data)]

    async def _page(self) -> list[Any]:
        return list(
            await self.store.steps(self.run_id, after=self._steps_read, limit=PAGE, delta=True)
        )

    def _step_events(self, row: Any) -> list[Event]:
        seq, node = row["seq"], row["node"]
        started = {"seq": seq, "node": node, "attempt": 1, **started_extra(row["output"])}
        return [
            Event(event_id(seq, STEP_STARTED), STEP_STARTED_EVENT, started),
            *replay_output(seq, node, row["output"]),
            Event(event_id(seq, STEP_FINISHED), STEP_FINISHED_EVENT, {"row": row}),
        ]

    def _finished(self) -> bytes | None:
        event_number = run_finished_id(self._steps_read)
        if event_number <= self.last:
            return None
        self.last = event_number
        run = json_body(RunOut, run_data(self.run, debug=self.debug))
        return frame(event_number, RUN_FINISHED_EVENT, run)

    def _cut(self) -> bytes:
        data = {
            "reason": "slow_consumer",
            "message": "this client fell too far behind; reconnect with Last-Event-ID",
            "last_event_id": self.last,
        }
        return frame(None, CUT_EVENT, dumps(data))

    def _sse(self, event: Event) -> bytes:
        """The event's wire form, made once per event (and variant) for all its streams."""
        self.last = event.id
        variant = (self.internals, self.debug) if event.type == STEP_FINISHED_EVENT else None
        framed = event.frames.get(variant)
        if framed is None:
            if event.type == STEP_FINISHED_EVENT:
                step = orjson.dumps(self._step_json(event.data["row"]), option=orjson.OPT_UTC_Z)
                framed = frame(event.id, event.type, step)
            else:
                framed = frame(event.id, event.type, dumps(event.data))
            event.frames[variant] = framed
        return framed

    def _step_json(self, row: Any) -> dict[str, Any]:
        """The step JSON plus its delta; without its output, which the stream has sent
        chunk by chunk already (a step's output can be megabytes, once per subscriber)."""
        step = step_data(row, internals=self.internals, debug=self.debug, delta=self.debug)
        del step["output"]
        return step


def frame(number: int | None, kind: str, data: bytes) -> bytes:
    """One SSE message: compact JSON never holds a line break, so one ``data:`` line."""
    head = f"id: {number}\r\n" if number is not None else ""
    return f"{head}event: {kind}\r\ndata: ".encode() + data + b"\r\n\r\n"


def unframe(message: bytes) -> tuple[int | None, str, Any]:
    """``frame`` undone: the message's id (None for a cut), its type and its JSON data."""
    fields = dict(line.split(b": ", 1) for line in message.split(b"\r\n") if line)
    number = fields.get(b"id")
    return (int(number) if number else None), fields[b"event"].decode(), loads(fields[b"data"])
