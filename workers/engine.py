"""Advance one run from its checkpoint: claim the lease, run steps, commit each, stop.

Every executor calls ``RunEngine.advance``; they differ only in where it runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Any

import structlog

from core.changes import ChangeFeed
from core.errors import FlowDefinitionError
from core.metrics import RUNS_FINISHED, STEP_SECONDS
from core.settings import Settings
from db.checkpoints import Checkpoints, Claimed, LeaseLost, StepRecord
from db.database import Database
from db.types import utcnow
from flows.compiler import first_leaf
from flows.registry import FlowSpec, Registry
from workers.cursor import Cursor
from workers.runner import StepError, StepResult, StepRunner
from workers.store import SharedStore, StoreError

log = structlog.get_logger("pocketrun.engine")


class Outcome(StrEnum):
    finished = "finished"  # the run reached a terminal status
    paused = "paused"  # budget used or stopping: lease released, run still unfinished
    lost = "lost"  # another holder took over
    skipped = "skipped"  # not claimable: finished, or leased by someone live


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RunEngine:
    def __init__(
        self,
        db: Database,
        registry: Registry,
        settings: Settings,
        *,
        worker_name: str | None = None,
        changes: ChangeFeed | None = None,
        threads: ThreadPoolExecutor | None = None,
        on_commit: Callable[[uuid.UUID], None] | None = None,
        store_sync: Any | None = None,
    ) -> None:
        self.db = db
        # Optional live copy of the stores elsewhere (workers.redis_store.RedisStore):
        # load(claimed, rebuild) -> SharedStore, committed(run_id, old_seq, new_seq, delta,
        # store, done) after each commit, ended(run_id) when the run ends.
        self.store_sync = store_sync
        self.checkpoints = Checkpoints(db)
        self.registry = registry
        self.settings = settings
        self.worker = worker_name or settings.worker_name or default_worker_name()
        self.owner = f"{self.worker}/{uuid.uuid4().hex[:8]}"
        self.changes = changes or ChangeFeed()
        self.threads = threads or ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="pocketrun-step"
        )
        self.stopping = asyncio.Event()
        self._on_commit = on_commit

    def _published(self, run_id: uuid.UUID) -> None:
        self.changes.publish(run_id)
        if self._on_commit is not None:
            self._on_commit(run_id)

    async def advance(self, run_id: uuid.UUID, *, budget: float | None = None) -> Outcome:
        """Carry the run on until it ends, the budget is used, or the engine is stopping."""
        claimed = await self.checkpoints.claim(run_id, self.owner, self.settings.lease_ttl)
        if claimed is None:
            return Outcome.skipped
        structlog.contextvars.bind_contextvars(run_id=str(run_id), flow=claimed.flow)
        try:
            return await self._advance(claimed, budget)
        except LeaseLost:
            log.warning("lease lost; another holder carries the run on")
            return Outcome.lost
        except asyncio.CancelledError:
            # stopped mid-step (e.g. the drain grace ran out): hand the run back now, so
            # another process redoes the lost step at once instead of after the lease expires
            await _finish_shielded(self.checkpoints.release(run_id, self.owner))
            raise
        finally:
            structlog.contextvars.unbind_contextvars("run_id", "flow", "step")

    async def _advance(self, claimed: Claimed, budget: float | None) -> Outcome:
        run_id = claimed.id
        seq = claimed.seq
        spec = self.registry.find(claimed.flow, claimed.flow_version)
        if spec is None or spec.graph_hash != claimed.graph_hash:
            return await self._end(
                claimed,
                seq,
                "failed",
                {
                    "type": "flow_changed",
                    "message": f"flow '{claimed.flow}' version {claimed.flow_version} with graph "
                    f"{claimed.graph_hash} is not loaded here",
                    "node": None,
                },
            )
        if claimed.deliveries > self.settings.max_deliveries:
            return await self._end(
                claimed,
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
            return await self._end(claimed, seq, "cancelled", _cancelled())
        try:
            _, graph = spec.instantiate()
        except FlowDefinitionError as exc:
            return await self._end(
                claimed,
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
        runner = StepRunner(graph, self.threads, str(run_id))
        loop = asyncio.get_running_loop()
        until = loop.time() + budget if budget is not None else None
        step_seconds = STEP_SECONDS.labels(claimed.flow)
        first = True  # a budget pauses only after a step: every advance makes progress
        while True:
            if self.stopping.is_set() or (not first and until is not None and loop.time() >= until):
                await self.checkpoints.release(run_id, self.owner)
                return Outcome.paused
            first = False
            now = utcnow()
            if claimed.deadline_at is not None and now >= claimed.deadline_at:
                return await self._end(
                    claimed,
                    seq,
                    "timed_out",
                    _deadline_error(claimed, cursor.next),
                )
            if seq >= spec.max_steps:
                return await self._end(
                    claimed,
                    seq,
                    "failed",
                    {
                        "type": "max_steps",
                        "message": f"the run reached max_steps={spec.max_steps} without ending",
                        "node": cursor.next,
                    },
                )
            timeout = _step_timeout(spec, claimed, now)
            structlog.contextvars.bind_contextvars(step=seq + 1)
            began = loop.time()
            result = await runner.step(cursor, store.working_copy(), seq + 1, timeout)
            if result.error is not None:
                error = result.error
                if (
                    error.status == "timed_out"
                    and claimed.deadline_at is not None
                    and timeout != spec.step_timeout
                ):  # the run's deadline, not the node's step_timeout, cut the step short
                    deadline = _deadline_error(claimed, error.node)
                    error = StepError(
                        "run_timeout", deadline["message"], error.node, "timed_out", error.attempts
                    )
                return await self._fail_step(claimed, seq, result, error)
            try:
                delta = store.diff(result.shared, result.node or "")
            except StoreError as exc:
                error = StepError(exc.type, exc.message, result.node or "")
                return await self._fail_step(claimed, seq, result, error)
            done = result.cursor.done
            if result.node is not None:
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
                    delta.to_json(),
                )
            else:
                new_seq, step = seq, None
            store.apply(delta)
            values: dict[str, Any]
            if done:
                values = self._final(spec, store, new_seq, "succeeded")
            else:
                values = {
                    "cursor": result.cursor.to_json(),
                    "current_node": first_leaf(graph, result.cursor.next),
                }
                if step is not None:
                    step.cursor, step.next_node = values["cursor"], values["current_node"]
                if step is None or new_seq % self.settings.snapshot_every == 0:
                    values.update(state=store.snapshot(), state_seq=new_seq)
            cancel = await self.checkpoints.commit(
                run_id, self.owner, seq, self.settings.lease_ttl, step, values
            )
            if self.store_sync is not None:
                await self.store_sync.committed(run_id, seq, new_seq, delta, store, done)
            step_seconds.observe(loop.time() - began)
            seq = new_seq
            cursor = result.cursor
            self._published(run_id)
            if done:
                RUNS_FINISHED.labels(claimed.flow, "succeeded").inc()
                return Outcome.finished
            if cancel:
                return await self._end(claimed, seq, "cancelled", _cancelled(cursor.next))

    async def _load_store(self, claimed: Claimed) -> SharedStore:
        limit = self.settings.max_store_bytes
        if claimed.state is None:  # no snapshot yet: the input and every delta
            store, after = SharedStore(claimed.input, max_bytes=limit), 0
        else:
            store, after = SharedStore(claimed.state, max_bytes=limit), claimed.state_seq
        if claimed.seq > after:
            for delta in await self.checkpoints.deltas(claimed.id, after):
                store.apply_json(delta)
        return store

    def _final(self, spec: FlowSpec, store: SharedStore, seq: int, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "finished_at": utcnow(),
            "output": store.pick(spec.output),
            "state": store.snapshot(),
            "state_seq": seq,
            "cursor": None,
            "current_node": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }

    async def _fail_step(
        self, claimed: Claimed, seq: int, result: StepResult, error: StepError
    ) -> Outcome:
        step = StepRecord(
            seq + 1,
            error.node,
            error.status,
            result.attempts,
            None,
            result.started_at,
            utcnow(),
            self.worker,
            error.to_json(),
            None,
        )
        status = "timed_out" if error.status == "timed_out" else "failed"
        log.info("step failed", node=error.node, error=error.type)
        return await self._end(claimed, seq, status, error.to_json(), step)

    async def _end(
        self,
        claimed: Claimed,
        seq: int,
        status: str,
        error: dict | None,
        step: StepRecord | None = None,
    ) -> Outcome:
        values = {
            "status": status,
            "finished_at": utcnow(),
            "error": error,
            "current_node": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        run_id = claimed.id
        await self.checkpoints.commit(
            run_id, self.owner, seq, self.settings.lease_ttl, step, values
        )
        if self.store_sync is not None:
            await self.store_sync.ended(run_id)
        self._published(run_id)
        RUNS_FINISHED.labels(claimed.flow, status).inc()
        log.info("run ended", status=status)
        return Outcome.finished


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


def _step_timeout(spec: FlowSpec, claimed: Claimed, now) -> float | None:
    timeout = spec.step_timeout
    if claimed.deadline_at is not None:
        remaining = max((claimed.deadline_at - now).total_seconds(), 0.001)
        timeout = remaining if timeout is None else min(timeout, remaining)
    return timeout
