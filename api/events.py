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

from api.schemas import RunOut, StepOut
from api.serialize import json_body, public_delta, run_data, step_data
from core.events import (
    RUN_FINISHED_EVENT,
    RUN_STATUS,
    RUN_STATUS_EVENT,
    STEP_FINISHED,
    STEP_FINISHED_EVENT,
    STEP_STARTED,
    STEP_STARTED_EVENT,
    Event,
    block_of,
    event_id,
    replay_output,
    run_finished_id,
)
from core.jsonutil import dumps_str, loads
from db.store import TERMINAL, RunStore
from workers.event_hub import EventHub

PAGE = 500  # steps read from the record at a time
POLL_MIN, POLL_MAX = 0.5, 5.0
CUT_EVENT = "stream.cut"


class RunEventStream:
    def __init__(
        self,
        store: RunStore,
        hub: EventHub,
        run: dict[str, Any],
        *,
        internals: bool,
        stopping: Callable[[], bool],
    ) -> None:
        self.store = store
        self.hub = hub
        self.run = run
        self.run_id: uuid.UUID = run["id"]
        self.internals = internals
        self.stopping = stopping
        self.last = 0  # the id of the last event sent
        self._steps_read = 0  # the record has been read up to this step

    async def events(self, after: int) -> AsyncIterator[dict[str, str]]:
        """SSE messages for events with id > ``after``, until ``run.finished``."""
        self.last = after
        self._steps_read = max(block_of(after) - 1, 0)
        with self.hub.subscribe(self.run_id) as live:
            async for message in self._from_record():
                yield message
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
                if event.id <= self.last:
                    continue
                if event.type == STEP_FINISHED_EVENT:
                    self._steps_read = max(self._steps_read, block_of(event.id))
                yield self._sse(event)

    async def _from_record(self) -> AsyncIterator[dict[str, str]]:
        """What the record holds past the last event sent; refreshes ``self.run``."""
        self.run = dict(await self.store.get(self.run_id) or self.run)
        if self.run["started_at"] is not None and self.last < event_id(1, RUN_STATUS):
            data = {"status": "running", "current_node": None}
            first = await self.store.steps(self.run_id, limit=1)
            data["current_node"] = first[0]["node"] if first else self.run["current_node"]
            yield self._sse(Event(event_id(1, RUN_STATUS), RUN_STATUS_EVENT, data))
        while True:
            rows = await self.store.steps(
                self.run_id, after=self._steps_read, limit=PAGE, delta=True
            )
            for row in rows:
                for event in self._step_events(row):
                    if event.id > self.last:
                        yield self._sse(event)
                self._steps_read = row["seq"]
            if len(rows) < PAGE:
                return

    def _step_events(self, row: Any) -> list[Event]:
        seq, node = row["seq"], row["node"]
        started = {"seq": seq, "node": node, "attempt": 1}
        return [
            Event(event_id(seq, STEP_STARTED), STEP_STARTED_EVENT, started),
            *replay_output(seq, node, row["output"]),
            Event(event_id(seq, STEP_FINISHED), STEP_FINISHED_EVENT, {"row": row}),
        ]

    def _finished(self) -> dict[str, str] | None:
        event_number = run_finished_id(self._steps_read)
        if event_number <= self.last:
            return None
        self.last = event_number
        data = loads(json_body(RunOut, run_data(self.run)))
        return {"id": str(event_number), "event": RUN_FINISHED_EVENT, "data": dumps_str(data)}

    def _cut(self) -> dict[str, str]:
        data = {
            "reason": "slow_consumer",
            "message": "this client fell too far behind; reconnect with Last-Event-ID",
            "last_event_id": self.last,
        }
        return {"event": CUT_EVENT, "data": dumps_str(data)}

    def _sse(self, event: Event) -> dict[str, str]:
        self.last = event.id
        data: Any = event.data
        if event.type == STEP_FINISHED_EVENT:
            data = self._step_json(data["row"])
        return {"id": str(event.id), "event": event.type, "data": dumps_str(data)}

    def _step_json(self, row: Any) -> dict[str, Any]:
        step = loads(json_body(StepOut, step_data(row, internals=self.internals)))
        step["delta"] = public_delta(row.get("delta"))
        return step
