"""The local executor: runs inside ``pocketrun serve`` with bounded concurrency.

Runs wait in a priority queue; ``concurrency`` tasks advance them. A heartbeat renews
the leases this process holds and a sweeper picks up every unfinished run that no live
lease holds, so a restarted server carries on the runs its predecessor had in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from typing import Any

import structlog

from core.changes import ChangeFeed
from core.metrics import IN_FLIGHT, QUEUE_DEPTH
from core.settings import Settings
from db.checkpoints import Checkpoints
from db.database import Database
from flows.registry import Registry
from workers.engine import Outcome, RunEngine

log = structlog.get_logger("pocketrun.local")


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        db: Database,
        registry: Registry,
        settings: Settings,
        *,
        worker_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.changes = ChangeFeed()
        self.engine = RunEngine(
            db, registry, settings, worker_name=worker_name, changes=self.changes
        )
        self.checkpoints = Checkpoints(db)
        self._queue: asyncio.PriorityQueue[tuple[int, int, uuid.UUID]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._known: set[uuid.UUID] = set()  # queued here or in flight here
        self._in_flight: set[asyncio.Task] = set()
        self._active: set[uuid.UUID] = set()  # being advanced by a task of this process
        self._tasks: list[asyncio.Task] = []

    @property
    def worker(self) -> str:
        return self.engine.worker

    async def start(self) -> None:
        self._tasks = [
            *(
                asyncio.create_task(self._work(), name=f"pocketrun-slot-{i}")
                for i in range(self.settings.concurrency)
            ),
            asyncio.create_task(self._heartbeat(), name="pocketrun-heartbeat"),
            asyncio.create_task(self._sweep(), name="pocketrun-sweeper"),
        ]

    async def submit(self, run_id: uuid.UUID, *, priority: int = 0, queue: str = "default") -> None:
        if run_id in self._known:
            return
        self._known.add(run_id)
        self._queue.put_nowait((-priority, next(self._order), run_id))
        QUEUE_DEPTH.set(self._queue.qsize())

    async def run_inline(self, run_id: uuid.UUID, budget: float) -> None:
        self._known.add(run_id)
        try:
            outcome = await self._advance(run_id, budget)
        finally:
            self._known.discard(run_id)
        if outcome is Outcome.paused and not self.engine.stopping.is_set():
            await self.submit(run_id)

    async def _advance(self, run_id: uuid.UUID, budget: float | None) -> Outcome:
        if run_id in self._active:
            return Outcome.skipped
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        IN_FLIGHT.set(len(self._in_flight))
        self._active.add(run_id)
        try:
            return await self.engine.advance(run_id, budget=budget)
        except Exception:
            log.exception("advancing the run failed; the sweeper will retry it", run_id=str(run_id))
            with contextlib.suppress(Exception):
                await self.checkpoints.release(run_id, self.engine.owner)
            return Outcome.paused
        finally:
            self._in_flight.discard(task)
            IN_FLIGHT.set(len(self._in_flight))
            self._active.discard(run_id)

    async def _work(self) -> None:
        while True:
            _, _, run_id = await self._queue.get()
            QUEUE_DEPTH.set(self._queue.qsize())
            try:
                if not self.engine.stopping.is_set():
                    await self._advance(run_id, None)
            finally:
                self._known.discard(run_id)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_ttl / 3)
            try:
                await self.checkpoints.renew(
                    self.engine.owner, self.settings.lease_ttl, list(self._active)
                )
            except Exception:
                log.exception("lease renewal failed")

    async def _sweep(self) -> None:
        while True:
            try:
                for run_id, priority in await self.checkpoints.orphans():
                    await self.submit(run_id, priority=priority)
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(self.settings.sweep_interval)

    async def stop(self) -> None:
        """Stop taking runs; in-flight ones stop at their next checkpoint and release."""
        self.engine.stopping.set()
        for task in self._tasks:
            if task.get_name() in ("pocketrun-heartbeat", "pocketrun-sweeper"):
                task.cancel()
        in_flight = list(self._in_flight)
        if in_flight:
            _, pending = await asyncio.wait(in_flight, timeout=self.settings.drain_grace)
            for task in pending:
                task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.engine.threads.shutdown(wait=False, cancel_futures=True)
        await self.changes.close()

    async def health(self) -> dict[str, Any]:
        return {
            "executor": self.name,
            "worker": self.worker,
            "in_flight": len(self._in_flight),
            "queued": self._queue.qsize(),
            "concurrency": self.settings.concurrency,
        }
