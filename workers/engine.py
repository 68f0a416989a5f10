"""Advance one run from its checkpoint: claim the lease, run steps, commit each, stop.

Every executor calls ``RunEngine.advance``; they differ only in where it runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog

from core.changes import ChangeFeed
from core.errors import FlowDefinitionError
from core.events import (
    RESUMED,
    RUN_FINISHED_EVENT,
    RUN_STATUS,
    RUN_STATUS_EVENT,
    RUN_WAITING_EVENT,
    STOPPED_STATUS,
    WAITING,
    WAITING_STATUS,
    Event,
    event_id,
    output_base,
    run_finished_id,
)
from core.metrics import RUNS_FINISHED, STEP_SECONDS
from core.settings import Settings
from db.store import Claimed, LeaseLost, RunStore, StepRecord
from flows.compiler import first_leaf
from flows.registry import FlowSpec, Registry
from workers import webhooks
from workers.cursor import Cursor
from workers.declared import DeclaredFlows
from workers.history import History, encoded
from workers.live import EventSink, LiveStep, step_finished_event
from workers.node_cache import NodeCache
from workers.runner import Limits, StepError, StepResult, StepRunner
from workers.store import SharedStore, StoreError, apply_delta
from workers.threads import StepThreads
from workers.tracebacks import last_line
from workers.tracing import run_ended, traced_advance, traced_runner

log = structlog.get_logger("pocketrun.engine")


class Outcome(StrEnum):
    finished = "finished"  # the run reached a terminal status
    yielded = "yielded"  # budget used or stopping: lease released, to be queued again
    stopped = "stopped"  # waiting, sleeping or paused: holds nothing until brought back
    lost = "lost"  # another holder took over
    skipped = "skipped"  # not claimable: finished, or leased by someone live
    left = "left"  # its flow version is not loaded here: queued again for a process that has it


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DatabaseClock:
    """The database's clock as read at a claim, carried on by this process's monotonic
    clock: deadlines and step times stay right however far this host's wall clock is off."""

    __slots__ = ("_at", "_base")

    def __init__(self, database_now: datetime) -> None:
        self._base = database_now
        self._at = time.monotonic()

    def __call__(self) -> datetime:
        return self._base + timedelta(seconds=time.monotonic() - self._at)


class LeaseRenewal:
    """When a checkpoint should also renew the run's lease: once a third of the TTL has
    passed since the claim or the last renewal (the supervisor renews it meanwhile too)."""

    __slots__ = ("_every", "_next", "ttl")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._every = ttl / 3
        self._next = time.monotonic() + self._every

    def due(self) -> float | None:
        """The TTL to renew for now, or None."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self._every
        return self.ttl


class RunEngine:
    def __init__(
        self,
        store: RunStore,
        registry: Registry,
        settings: Settings,
        *,
        worker_name: str | None = None,
        changes: ChangeFeed | None = None,
        threads: StepThreads | None = None,
        on_commit: Callable[[uuid.UUID], None] | None = None,
        store_sync: Any | None = None,
        events: EventSink | None = None,
        cache: NodeCache | None = None,
    ) -> None:
        self.store = store
        self.cache = cache or NodeCache()  # exec results of nodes that opt in (the store's)
        self.events = events  # where live events go (workers.live); None: nowhere
        # Optional live copy of the stores elsewhere (workers.redis_store.RedisStore):
        # load(claimed, rebuild) -> SharedStore, committed(run_id, old_seq, new_seq, delta,
        # store, done) after each commit, ended(run_id) when the run ends.
        self.store_sync = store_sync
        self.registry = registry
        self.declared = DeclaredFlows(store, registry)
        self.settings = settings
        self.worker = worker_name or settings.worker_name or default_worker_name()
        self.owner = f"{self.worker}/{uuid.uuid4().hex[:8]}"
        self.changes = changes or ChangeFeed()
        self.threads = threads or StepThreads(
            settings.concurrency, max_abandoned=settings.max_abandoned_threads
        )
        self.stopping = asyncio.Event()
        self._on_commit = on_commit
        self.active: set[uuid.UUID] = set()  # runs this engine is advancing right now

    def _published(self, run_id: uuid.UUID) -> None:
        self.changes.publish(run_id)
        if self._on_commit is not None:
            self._on_commit(run_id)

    async def advance(self, run_id: uuid.UUID, *, budget: float | None = None) -> Outcome:
        """Carry the run on until it ends, the budget is used, or the engine is stopping."""
        claimed = await self.store.claim(run_id, self.owner, self.settings.lease_ttl)
        if claimed is None:
            return Outcome.skipped
        structlog.contextvars.bind_contextvars(run_id=str(run_id), flow=claimed.flow)
        self.active.add(run_id)
        try:
            advancing = self._advance(claimed, DatabaseClock(claimed.now), budget)
            return await traced_advance(claimed, advancing)
        except LeaseLost:
            log.warning("lease lost; another holder carries the run on")
            return Outcome.lost
        except asyncio.CancelledError:
            # stopped mid-step (e.g. the drain grace ran out): hand the run back now, so
            # another process redoes the lost step at once instead of after the lease expires
            await _finish_shielded(self.store.release(run_id, self.owner))
            raise
        finally:
            self.active.discard(run_id)
            structlog.contextvars.unbind_contextvars("run_id", "flow", "step")

    async def _advance(self, claimed: Claimed, now: DatabaseClock, budget: float | None) -> Outcome:
        run_id = claimed.id
        seq = claimed.seq
        if claimed.deliveries > self.settings.max_deliveries:
            return await self._end(
                claimed,
                now,
                seq,
                "failed",
                {
                    "type": "delivery_cap",
                    "message": f"the run was delivered {claimed.deliveries} times, over the cap "
                    f"of {self.settings.max_deliveries}; it keeps dying mid-step",
                    "node": None,
                },
            )
        if claimed.cancel_requested:
            return await self._end(claimed, now, seq, "cancelled", _cancelled())
        if claimed.pause_requested:
            return await self._stop(claimed, seq, "paused", {"pause_requested": False})
        spec = self.registry.find(claimed.flow, claimed.flow_version)
        if spec is None:  # posted to POST /v1/flows since this process loaded its flows?
            spec = await self.declared.find(claimed.flow, claimed.flow_version)
        if spec is None or spec.graph_hash != claimed.graph_hash:
            return await self._not_loaded(claimed, now, seq)
        try:
            _, graph = spec.instantiate()
        except FlowDefinitionError as exc:
            return await self._end(
                claimed,
                now,
                seq,
                "failed",
                {"type": "flow_changed", "message": exc.detail, "node": None},
            )
        if self.store_sync is not None:
            store = await self.store_sync.load(claimed, self._load_store)
        else:
            store = await self._load_store(claimed)
        cursor = Cursor.from_json(claimed.cursor)
        self._published(run_id)  # the claim made it running
        if self.events is not None and (claimed.seq == 0 or claimed.deliveries == 1):
            # first claimed, or carried on after a stop (a sleep, a pause, an answer)
            data = {"status": "running", "current_node": first_leaf(graph, cursor.next)}
            k = RESUMED if cursor.wait is not None else RUN_STATUS
            self.events.publish(run_id, Event(event_id(seq + 1, k), RUN_STATUS_EVENT, data))
        inline = spec.sync_nodes == "loop"  # no thread hop; no timeout can cut them short
        cache = self.cache.scope(self.store, claimed.tenant, claimed.flow)
        runner = StepRunner(
            graph, self.threads, str(run_id), clock=now, inline_sync=inline, cache=cache
        )
        runner = traced_runner(runner, claimed)
        lease = LeaseRenewal(self.settings.lease_ttl)
        loop = asyncio.get_running_loop()
        until = loop.time() + budget if budget is not None else None
        step_seconds = STEP_SECONDS.labels(claimed.flow)
        history = History(claimed.history_bytes, self.settings.max_history_bytes)
        first = True  # a budget pauses only after a step: every advance makes progress
        while True:
            if self.stopping.is_set() or (not first and until is not None and loop.time() >= until):
                await self.store.release(run_id, self.owner)
                return Outcome.yielded
            first = False
            if claimed.deadline_at is not None and now() >= claimed.deadline_at:
                return await self._end(
                    claimed,
                    now,
                    seq,
                    "timed_out",
                    _deadline_error(claimed, cursor.next),
                )
            if seq >= spec.max_steps:
                return await self._end(
                    claimed,
                    now,
                    seq,
                    "failed",
                    {
                        "type": "max_steps",
                        "message": f"the run reached max_steps={spec.max_steps} without ending",
                        "node": cursor.next,
                    },
                )
            structlog.contextvars.bind_contextvars(step=seq + 1)
            began = loop.time()
            limits = _step_limits(spec, claimed, now(), began)
            live = None
            if self.events is not None:
                # the claim's first step may be a redo: its output starts a block further on
                base = output_base(claimed.deliveries if seq == claimed.seq else 1)
                max_output = self.settings.max_step_output_bytes
                live = LiveStep(self.events, run_id, seq + 1, base, max_output)
            working = store.working_copy()
            if cursor.pending:
                apply_delta(working, cursor.pending)
            result = await runner.step(cursor, working, seq + 1, limits, live)
            output = live.close() if live is not None else None
            if result.waiting and result.error is None:
                return await self._wait(claimed, now, seq, result, store)
            if result.error is not None:
                error = result.error
                if error.type == "run_timeout":
                    deadline = _deadline_error(claimed, error.node)
                    error = StepError(
                        "run_timeout", deadline["message"], error.node, "timed_out", error.attempts
                    )
                return await self._fail_step(claimed, seq, result, error, now, output)
            try:
                delta = store.diff(result.shared, result.node or "")
            except StoreError as exc:
                error = StepError(exc.type, exc.message, result.node or "")
                return await self._fail_step(claimed, seq, result, error, now, output)
            done = result.cursor.done
            # encoded once here: the bytes are counted and the stores write them as they are
            delta_json = delta.to_json()
            step_delta, delta_bytes = encoded(delta_json)
            step_cursor, cursor_bytes = encoded(None if done else result.cursor.to_json())
            step_output, output_bytes = encoded(output)
            step_bytes = delta_bytes + cursor_bytes + output_bytes
            if result.node is not None:
                if not history.fits(step_bytes):
                    message = history.overflow_message(result.node, step_bytes)
                    error = StepError("history_too_large", message, result.node)
                    return await self._fail_step(claimed, seq, result, error, now, output)
                new_seq = seq + 1
                step = StepRecord(
                    new_seq,
                    result.node,
                    "succeeded",
                    result.attempts,
                    result.action,
                    result.started_at,
                    result.finished_at,
                    self.worker,
                    None,
                    step_delta,
                    history_bytes=step_bytes,
                    output=step_output,
                    cached=result.cached,
                )
            else:
                new_seq, step = seq, None
            store.apply(delta)
            values: dict[str, Any]
            if done:
                values = self._final(spec, store, new_seq, "succeeded", now())
            else:
                values = {
                    "cursor": step_cursor,
                    "current_node": first_leaf(graph, result.cursor.next),
                }
                if step is not None:
                    step.cursor, step.next_node = step_cursor, values["current_node"]
                if step is None or new_seq % self.settings.snapshot_every == 0:
                    values.update(state=store.snapshot(), state_seq=new_seq)
                if result.sleep is not None:
                    values.update(
                        _stopped("sleeping"), wake_at=now() + timedelta(seconds=result.sleep)
                    )
            asked = await self.store.checkpoint(run_id, self.owner, seq, lease.due(), step, values)
            if self.store_sync is not None:
                await self.store_sync.committed(run_id, seq, new_seq, delta, store, done)
            step_seconds.observe(loop.time() - began)
            if step is not None:
                history.add(step_bytes)
            seq = new_seq
            cursor = result.cursor
            self._published(run_id)
            if step is not None:
                self._step_finished(run_id, step, output, delta_json)
            if done:
                self._run_finished(claimed, seq)
                run_ended("succeeded")
                RUNS_FINISHED.labels(claimed.flow, "succeeded").inc()
                return Outcome.finished
            if result.sleep is not None:
                return await self._stopped(claimed, seq, "sleeping", asked)
            if asked == "cancel":
                return await self._end(claimed, now, seq, "cancelled", _cancelled(cursor.next))
            if asked == "pause":
                return await self._stop(claimed, seq, "paused", {"pause_requested": False})

    async def _not_loaded(self, claimed: Claimed, now: DatabaseClock, seq: int) -> Outcome:
        """The run's version is not loaded here: leave it to a process that has it, unless
        none has had it for FLOW_MISSING_GRACE seconds (the database's clock)."""
        grace = self.settings.flow_missing_grace
        seen = await self.store.flow_last_seen(
            claimed.flow, claimed.flow_version, claimed.graph_hash
        )
        what = f"flow '{claimed.flow}' version {claimed.flow_version} (graph {claimed.graph_hash})"
        if seen is not None and (now() - seen).total_seconds() < grace:
            await self.store.leave(claimed.id, self.owner)
            log.info("flow version not loaded here; run left queued", version=claimed.flow_version)
            return Outcome.left
        if seen is None:
            message = f"{what} is not loaded by any process, nor was it ever recorded"
        else:
            message = (
                f"{what} is not loaded by any live process: one last had it at "
                f"{seen.isoformat()}, over FLOW_MISSING_GRACE ({grace:g}s) ago"
            )
        error = {"type": "flow_changed", "message": message, "node": None}
        return await self._end(claimed, now, seq, "failed", error)

    async def _wait(
        self,
        claimed: Claimed,
        now: DatabaseClock,
        seq: int,
        result: StepResult,
        store: SharedStore,
    ) -> Outcome:
        """The run stops at an AskHuman node after its prep: commit where it stands (what
        the prep changed stays pending for the step the answer completes) and wait."""
        cursor, node = result.cursor, result.node or ""
        try:
            delta = store.diff(result.shared, node)
        except StoreError as exc:
            error = StepError(exc.type, exc.message, node)
            return await self._fail_step(claimed, seq, result, error, now)
        cursor.pending = delta.to_json()
        assert cursor.wait is not None
        request = cursor.wait["request"]
        timeout = request.get("timeout")
        waiting_for = {"node": node, "request": request}
        values = {
            **_stopped("waiting"),
            "cursor": encoded(cursor.to_json())[0],
            "current_node": node,
            "waiting_for": waiting_for,
            "wake_at": now() + timedelta(seconds=timeout) if timeout else None,
        }
        asked = await self.store.checkpoint(claimed.id, self.owner, seq, None, None, values)
        webhooks.note(
            self.store,
            claimed.id,
            claimed.tenant,
            (RUN_STATUS_EVENT, RUN_WAITING_EVENT),
            waiting_for,
        )
        if self.events is not None:
            status = {"status": "waiting", "current_node": node}
            self.events.publish(
                claimed.id, Event(event_id(seq + 1, WAITING_STATUS), RUN_STATUS_EVENT, status)
            )
            self.events.publish(
                claimed.id, Event(event_id(seq + 1, WAITING), RUN_WAITING_EVENT, waiting_for)
            )
        return await self._stopped(claimed, seq, "waiting", asked)

    async def _stop(
        self, claimed: Claimed, seq: int, status: str, values: dict[str, Any]
    ) -> Outcome:
        """Stop the run holding nothing (``paused``) until an operator brings it back."""
        values = {**_stopped(status), **values}
        asked = await self.store.checkpoint(claimed.id, self.owner, seq, None, None, values)
        return await self._stopped(claimed, seq, status, asked)

    async def _stopped(self, claimed: Claimed, seq: int, status: str, asked: str | None) -> Outcome:
        """The run now holds nothing: say so; a cancel that came meanwhile ends it now."""
        run_id = claimed.id
        if self.events is not None and status != "waiting":
            data = {"status": status, "current_node": None}
            self.events.publish(
                run_id, Event(event_id(seq, STOPPED_STATUS), RUN_STATUS_EVENT, data)
            )
        if asked == "cancel":
            await self.store.cancel(run_id)
        self._published(run_id)
        log.info("run stopped", status=status)
        return Outcome.stopped

    def _step_finished(
        self, run_id: uuid.UUID, step: StepRecord, output: Any = None, delta: Any = None
    ) -> None:
        if self.events is not None:
            self.events.publish(run_id, step_finished_event(step, output, delta))

    def _run_finished(self, claimed: Claimed, last_seq: int) -> None:
        """The stream's last event; its subscribers read the finished run from the record."""
        run_id = claimed.id
        webhooks.note(self.store, run_id, claimed.tenant, (RUN_STATUS_EVENT, RUN_FINISHED_EVENT))
        if self.events is not None:
            event = Event(run_finished_id(last_seq), RUN_FINISHED_EVENT, {"seq": last_seq})
            self.events.publish(run_id, event)

    async def _load_store(self, claimed: Claimed) -> SharedStore:
        limit = self.settings.max_store_bytes
        if claimed.state is None:  # no snapshot yet: the input and every delta
            store, after = SharedStore(claimed.input, max_bytes=limit), 0
        else:
            store, after = SharedStore(claimed.state, max_bytes=limit), claimed.state_seq
        if claimed.seq > after:
            for delta in await self.store.deltas(claimed.id, after):
                store.apply_json(delta)
        return store

    def _final(
        self, spec: FlowSpec, store: SharedStore, seq: int, status: str, at: datetime
    ) -> dict[str, Any]:
        return {
            "status": status,
            "finished_at": at,
            "output": store.pick(spec.output),
            "state": store.snapshot(),
            "state_seq": seq,
            "cursor": None,
            "current_node": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }

    async def _fail_step(
        self,
        claimed: Claimed,
        seq: int,
        result: StepResult,
        error: StepError,
        now: DatabaseClock,
        output: dict[str, Any] | None = None,
    ) -> Outcome:
        step = StepRecord(
            seq + 1,
            error.node,
            error.status,
            result.attempts,
            None,
            result.started_at,
            now(),
            self.worker,
            error.to_json(),
            None,
            output=output,
        )
        status = "timed_out" if error.status == "timed_out" else "failed"
        where: dict[str, Any] = {}
        if error.traceback is not None:
            where = {
                "raised_at": error.traceback.raised_at,
                "traceback": last_line(error.traceback.text),
            }
        log.info("step failed", node=error.node, error=error.type, **where)
        return await self._end(claimed, now, seq, status, error.to_json(), step)

    async def _end(
        self,
        claimed: Claimed,
        now: Callable[[], datetime],
        seq: int,
        status: str,
        error: dict | None,
        step: StepRecord | None = None,
    ) -> Outcome:
        values = {
            "status": status,
            "finished_at": now(),
            "error": error,
            "current_node": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        run_id = claimed.id
        await self.store.checkpoint(run_id, self.owner, seq, self.settings.lease_ttl, step, values)
        if self.store_sync is not None:
            await self.store_sync.ended(run_id)
        self._published(run_id)
        if step is not None:
            self._step_finished(run_id, step, step.output)
        self._run_finished(claimed, step.seq if step is not None else seq)
        run_ended(status, error)
        RUNS_FINISHED.labels(claimed.flow, status).inc()
        log.info("run ended", status=status)
        return Outcome.finished


def _stopped(status: str) -> dict[str, Any]:
    """The run's values when it stops holding nothing: no lease, no worker."""
    return {"status": status, "lease_owner": None, "lease_expires_at": None}


def _cancelled(node: str | None = None) -> dict[str, Any]:
    return {"type": "cancelled", "message": "cancelled on request", "node": node}


async def _finish_shielded(coro: Any) -> None:
    """Await ``coro`` to the end even if the calling task is cancelled again meanwhile."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:
            log.exception("releasing the lease of a cancelled run failed")
            return


def _deadline_error(claimed: Claimed, node: str | None) -> dict[str, Any]:
    assert claimed.deadline_at is not None
    return {
        "type": "run_timeout",
        "message": f"the run passed its deadline ({claimed.deadline_at.isoformat()})",
        "node": node,
    }


def _step_limits(spec: FlowSpec, claimed: Claimed, now: datetime, loop_now: float) -> Limits:
    """The flow's step timeout, and the run's deadline as loop time."""
    until = None
    if claimed.deadline_at is not None:
        until = loop_now + max((claimed.deadline_at - now).total_seconds(), 0.001)
    return Limits(spec.step_timeout, until)
