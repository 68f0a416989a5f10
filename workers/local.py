"""The local executor: runs inside ``pocketrun serve`` with bounded concurrency.

Runs wait in a priority queue; ``concurrency`` tasks advance them. The process's
``Supervisor`` renews the leases of the runs in flight here and, holding the sweeper lock,
queues every unfinished run that no live lease holds, so a restarted server carries on the
runs its predecessor had in flight.
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
from db.store import RunStore
from flows.registry import Registry
from workers.engine import Outcome, RunEngine
from workers.supervisor import Supervisor

log = structlog.get_logger("pocketrun.local")

SETTLE_POLL = 0.01
RELEASE_WAIT = 2.0


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        store: RunStore,
        registry: Registry,
        settings: Settings,
        *,
        worker_name: str | None = None,
        sweep: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.changes = ChangeFeed()
        self.engine = RunEngine(
            store, registry, settings, worker_name=worker_name, changes=self.changes
        )
        self.supervisor = Supervisor(
            store,
            settings,
            owner=self.engine.owner,
            active=lambda: self.engine.active,
            sweep=self._sweep if sweep else None,
        )
        self._queue: asyncio.PriorityQueue[tuple[int, int, uuid.UUID]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._known: set[uuid.UUID] = set()  # queued here or in flight here
        self._in_flight: set[asyncio.Task] = set()
        self._active: set[uuid.UUID] = set()  # taken by a task of this process
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
        ]
        self.supervisor.start()

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
                await self.store.release(run_id, self.engine.owner)
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

    async def _sweep(self, first: bool) -> None:
        """Queue here the runs nobody holds (all of them on this process's first sweep)."""
        for found in await self.store.take_orphans(
            self.settings.redispatch_after, everything=first, limit=500
        ):
            await self.submit(found.id, priority=found.priority)

    async def stop(self) -> None:
        """Stop taking runs; in-flight ones stop at their next checkpoint and release.

        The wait is for the runs, not for the tasks carrying them: a slot's task lives on
        after its run has stopped. Past ``drain_grace`` the steps still running are
        cancelled, and each hands its run back (the step runs again elsewhere)."""
        self.engine.stopping.set()
        if not await self._settled(self.settings.drain_grace):
            for task in list(self._in_flight):
                task.cancel()
            await self._settled(RELEASE_WAIT)  # their releases, before the store closes
        await self.supervisor.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.engine.threads.shutdown(wait=False, cancel_futures=True)
        await self.changes.close()

    async def _settled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for no run to be in flight here; False if some still are."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._in_flight:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(SETTLE_POLL)
        return True

    async def health(self) -> dict[str, Any]:
        return {
            "executor": self.name,
            "worker": self.worker,
            "in_flight": len(self._in_flight),
            "queued": self._queue.qsize(),
            "concurrency": self.settings.concurrency,
        }
