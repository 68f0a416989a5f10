"""A run's events and their ids: the same numbers live and when replayed from the record.

An event id is ``seq * STRIDE + k``: the step it belongs to, then its place in that
step's block. Ids therefore increase within a run and any process can recompute them
from the database, so ``Last-Event-ID`` resumes anywhere with no gap and no duplicate:

- k = 0: ``run.status`` when the run turns running before step ``seq`` (its first claim)
- k = 1: ``step.started``
- k = 2 ...: ``node.output``, ``node.output.reset`` and ``node.progress`` (a batch node's
  items done of its total) in the order they happened;
  a step carried on after its process died starts a block further on (``output_base``),
  with a reset first, so its chunks never reuse the dead attempt's ids
- k = STRIDE - 5, STRIDE - 4: ``run.status`` (waiting) and ``run.waiting`` when the
  step's node (an AskHuman) stops the run to wait for an answer; k = STRIDE - 3:
  ``run.status`` (running) when the answer carries it on
- k = STRIDE - 2: ``step.finished``
- k = STRIDE - 1: ``run.status`` when the run stops after the step holding nothing
  (sleeping, paused); k = 0 of the next block says it runs again
- ``run.finished`` is k = 1 of the block after the run's last step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRIDE = 10_000_000
PER_DELIVERY = 100_000  # output events one delivery of a step may have
RUN_STATUS = 0
STEP_STARTED = 1
WAITING_STATUS = STRIDE - 5
WAITING = STRIDE - 4
RESUMED = STRIDE - 3
STEP_FINISHED = STRIDE - 2
STOPPED_STATUS = STRIDE - 1

RUN_STATUS_EVENT = "run.status"
STEP_STARTED_EVENT = "step.started"
OUTPUT_EVENT = "node.output"
RESET_EVENT = "node.output.reset"
PROGRESS_EVENT = "node.progress"
STEP_FINISHED_EVENT = "step.finished"
RUN_FINISHED_EVENT = "run.finished"
RUN_WAITING_EVENT = "run.waiting"


def event_id(seq: int, k: int) -> int:
    return seq * STRIDE + k


def block_of(event: int) -> int:
    """The step seq whose block holds ``event``."""
    return event // STRIDE


def run_finished_id(last_seq: int) -> int:
    return event_id(last_seq + 1, STEP_STARTED)


def output_base(deliveries: int) -> int:
    """The first k of a step's output in its ``deliveries``-th delivery (1: the first)."""
    return 2 + (max(deliveries, 1) - 1) * PER_DELIVERY


@dataclass(slots=True, eq=False)
class Event:
    id: int
    type: str
    data: dict[str, Any]
    # its wire form, by variant (e.g. with or without internals): made once, sent to many
    frames: dict[Any, bytes] = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.id, self.type, self.data) == (other.id, other.type, other.data)


class StepOutput:
    """What one step's node streams: numbered chunks and resets, capped in bytes.

    Past ``max_bytes`` chunks are dropped and the step's output says it was truncated;
    the node goes on (a stream is a view, never a reason to fail a step)."""

    def __init__(
        self,
        seq: int,
        node: str,
        base: int,
        max_bytes: int,
        started: dict[str, Any] | None = None,
    ) -> None:
        self.seq = seq
        self.node = node
        self.started = started  # what step.started carried beyond seq, node, attempt
        self.attempt = 1
        self.max_bytes = max_bytes
        self.bytes = 0
        self.truncated = False
        self._k = base
        self._last = base + PER_DELIVERY - 1
        # [k, attempt, chunk], [k, attempt] (a reset) or [k, attempt, done, total] (progress)
        self.events: list[list[Any]] = []

    def chunk(self, chunk: Any, size: int) -> Event | None:
        if self.truncated or self.bytes + size > self.max_bytes or self._k >= self._last:
            self.truncated = True
            return None
        self.bytes += size
        k = self._next()
        self.events.append([k, self.attempt, chunk])
        data = {"seq": self.seq, "node": self.node, "attempt": self.attempt, "chunk": chunk}
        return Event(event_id(self.seq, k), OUTPUT_EVENT, data)

    def reset(self, attempt: int) -> Event | None:
        """A new attempt begins: what the earlier one streamed no longer counts."""
        self.attempt = attempt
        if self._k >= self._last:
            return None
        k = self._next()
        self.events.append([k, attempt])
        return Event(event_id(self.seq, k), RESET_EVENT, {"seq": self.seq, "attempt": attempt})

    def progress(self, done: int, total: int) -> Event | None:
        if self._k >= self._last:
            return None
        k = self._next()
        self.events.append([k, self.attempt, done, total])
        data = {"seq": self.seq, "node": self.node, "done": done, "total": total}
        return Event(event_id(self.seq, k), PROGRESS_EVENT, data)

    def _next(self) -> int:
        k = self._k
        self._k += 1
        return k

    def record(self) -> dict[str, Any] | None:
        """The ``steps.output`` value: None when the node streamed nothing."""
        if not self.events and not self.started:
            return None
        record: dict[str, Any] = {"events": self.events, "truncated": self.truncated}
        if self.started:
            record["started"] = self.started
        return record


def replay_output(seq: int, node: str, output: dict[str, Any] | None) -> list[Event]:
    """The output events of a committed step, as they were sent live."""
    events = []
    for item in (output or {}).get("events", []):
        if len(item) == 3:
            k, attempt, chunk = item
            data = {"seq": seq, "node": node, "attempt": attempt, "chunk": chunk}
            events.append(Event(event_id(seq, k), OUTPUT_EVENT, data))
        elif len(item) == 4:
            k, _, done, total = item
            data = {"seq": seq, "node": node, "done": done, "total": total}
            events.append(Event(event_id(seq, k), PROGRESS_EVENT, data))
        else:
            k, attempt = item
            events.append(Event(event_id(seq, k), RESET_EVENT, {"seq": seq, "attempt": attempt}))
    return events


def started_extra(output: dict[str, Any] | None) -> dict[str, Any]:
    """What a committed step's ``step.started`` carried beyond seq, node and attempt."""
    return (output or {}).get("started") or {}


def final_chunks(output: dict[str, Any] | None) -> list[Any]:
    """The chunks of the attempt that committed: what the step's ``output`` shows."""
    chunks: list[Any] = []
    for item in (output or {}).get("events", []):
        if len(item) == 3:
            chunks.append(item[2])
        elif len(item) == 2:
            chunks = []
    return chunks
