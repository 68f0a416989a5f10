"""The local executor: runs inside ``pocketrun serve`` with bounded concurrency.

Runs wait in a queue that is fair across tenants (``workers.fair_queue``); ``concurrency``
tasks advance them, a time slice at a time, so a long run goes back in line between
slices and nobody waits behind it for long. Inline runs take a slot like any other run:
the caller's wait counts down meanwhile, and the run carries on in the background. The
process's
``Supervisor`` renews the leases of the runs in flight here and, holding the sweeper lock,
queues every unfinished run that no live lease holds, so a restarted server carries on the
runs its predecessor had in flight. A run whose flow version is not loaded here is left
queued (``Outcome.left``) and offered again by a sweep ``REDISPATCH_AFTER`` seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import structlog

from core.changes import ChangeFeed
from core.metrics import IN_FLIGHT, QUEUE_DEPTH
from core.settings import Settings
from db.store import Dispatch, RunStore
from flows.registry import Registry, loaded_flows
from workers.admission import LEFT_FLIGHT, release_all_held, release_held
from workers.engine import Outcome, RunEngine
from workers.event_hub import EventHub
from workers.fair_queue import FairQueue
from workers.node_cache import node_cache
from workers.supervisor import Supervisor
from workers.tracing import remember

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
        self.events = EventHub(settings.event_buffer)
        self.engine = RunEngine(
            store,
            registry,
            settings,
            worker_name=worker_name,
            changes=self.changes,
            events=self.events,
            cache=node_cache(settings),
        )
        self.supervisor = Supervisor(
            store,
            settings,
            owner=self.engine.owner,
            active=lambda: self.engine.active,
            sweep=self._sweep if sweep else None,
            flows=loaded_flows(registry),
        )
        self._queue = FairQueue(settings.slots_per_tenant)
        self._known: set[uuid.UUID] = set()  # queued here or in flight here
        self._in_flight: set[asyncio.Task] = set()
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

    async def submit(
        self,
        run_id: uuid.UUID,
        *,
        priority: int = 0,
        queue: str = "default",
        tenant: str = "default",
    ) -> None:
        self._enqueue(run_id, tenant, priority, None)

    async def run_inline(
        self, run_id: uuid.UUID, budget: float, *, tenant: str = "default", priority: int = 0
    ) -> None:
        until = asyncio.get_running_loop().time() + budget
        self._enqueue(run_id, tenant, priority, until)

    def _enqueue(
        self, run_id: uuid.UUID, tenant: str, priority: int, inline_until: float | None
    ) -> None:
        if run_id in self._known:
            return
        self._known.add(run_id)
        remember(run_id)
        self._queue.put(run_id, tenant, priority, inline_until=inline_until)
        QUEUE_DEPTH.set(self._queue.qsize())

    async def _hand_over(self, found: list[Dispatch]) -> None:
        for dispatch in found:
            self._enqueue(dispatch.id, dispatch.tenant, dispatch.priority, None)

    async def _advance(self, run_id: uuid.UUID, budget: float | None) -> Outcome | None:
        """None: advancing failed here; the sweeper carries the run on later."""
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        IN_FLIGHT.set(len(self._in_flight))
        try:
            return await self.engine.advance(run_id, budget=budget)
        except Exception:
            log.exception("advancing the run failed; the sweeper will retry it", run_id=str(run_id))
            with contextlib.suppress(Exception):
                await self.store.release(run_id, self.engine.owner)
            return None
        finally:
            self._in_flight.discard(task)
            IN_FLIGHT.set(len(self._in_flight))

    async def _work(self) -> None:
        while True:
            waiting = await self._queue.take()
            QUEUE_DEPTH.set(self._queue.qsize())
            outcome = None
            try:
                if not self.engine.stopping.is_set():
                    outcome = await self._advance(waiting.run_id, self.settings.time_slice)
            finally:
                self._queue.done(waiting.tenant)
                self._known.discard(waiting.run_id)
            if outcome is Outcome.yielded and not self.engine.stopping.is_set():
                # its slice is used: back in line, behind whoever waits
                await self.submit(waiting.run_id, priority=waiting.priority, tenant=waiting.tenant)
            elif outcome in LEFT_FLIGHT:
                await release_held(
                    self.store, waiting.tenant, self.settings.tenant_concurrency, self._hand_over
                )

    async def _sweep(self, first: bool) -> None:
        """Queue here the runs nobody holds (all of them on this process's first sweep),
        wake the sleeping runs that are due and end the waits that timed out."""
        woken, ended = await self.store.due_timers(limit=500)
        for run_id in ended:
            self.changes.publish(run_id)
        for found in woken:
            await self.submit(found.id, priority=found.priority, tenant=found.tenant)
        for found in await self.store.take_orphans(
            self.settings.redispatch_after, everything=first, limit=500
        ):
            await self.submit(found.id, priority=found.priority, tenant=found.tenant)
        # the tenants whose runs ended in a process now gone
        await release_all_held(self.store, self.settings.tenant_concurrency, self._hand_over)

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
        threads, warnings = self.engine.threads.health()
        body: dict[str, Any] = {
            "executor": self.name,
            "worker": self.worker,
            "in_flight": len(self._in_flight),
            "queued": self._queue.qsize(),
            "concurrency": self.settings.concurrency,
            "slots_per_tenant": self.settings.slots_per_tenant,
            "step_threads": threads,
        }
        if warnings:
            body["warnings"] = warnings
        if threads["abandoned"] >= threads["cap"]:
            body["ready"] = False
        return body
