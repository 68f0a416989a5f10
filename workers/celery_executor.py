"""The API's side of EXECUTOR=celery: hand runs to the workers, run inline ones here.

This module never imports Celery (DESIGN.md section 1): messages go onto the Redis broker
through ``workers.dispatch``. An inline run waits for one of this process's
``CONCURRENCY`` slots (fair across tenants, ``workers.fair_queue``), advances here for
what is left of its budget and, if it outgrows it (or its budget ran out while it
waited), continues on the workers from its next checkpoint. Long polls learn of
changes made by workers through Redis pub/sub (with the database poll in
``api.state.wait_for_change`` as the backstop).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import structlog

from core.changes import ChangeFeed
from core.metrics import QUEUE_DEPTH, WORKERS_ALIVE
from core.settings import Settings
from db.store import RunStore
from flows.registry import Registry
from workers.dispatch import Dispatcher, redis_client
from workers.distributed import Advancer
from workers.engine import RunEngine, default_worker_name
from workers.fair_queue import FairQueue, Waiting
from workers.node_cache import node_cache
from workers.redis_events import RedisEvents
from workers.redis_store import CHANGES_CHANNEL, RedisStore
from workers.supervisor import Supervisor
from workers.tracing import remember

log = structlog.get_logger("pocketrun.celery_executor")


class CeleryExecutor:
    name = "celery"

    def __init__(self, settings: Settings, store: RunStore, registry: Registry) -> None:
        if not settings.redis_url:
            raise RuntimeError("EXECUTOR=celery needs POCKETRUN_REDIS_URL")
        if not store.multi_host:
            log.warning("EXECUTOR=celery is meant for PostgreSQL; SQLite works on one machine only")
        self.settings = settings
        self.runs = store
        self.registry = registry
        self.changes = ChangeFeed()
        self.redis = redis_client(settings.redis_url)
        broker = settings.broker_url or settings.redis_url
        self.broker = self.redis if broker == settings.redis_url else redis_client(broker)
        self.dispatcher = Dispatcher(self.broker)
        self.live = RedisStore(self.redis, settings) if settings.redis_store else None
        self.events = RedisEvents(self.redis, settings)
        self.engine = RunEngine(
            store,
            registry,
            settings,
            worker_name=settings.worker_name or f"api:{default_worker_name()}",
            changes=self.changes,
            on_commit=self.live.notify if self.live is not None else None,
            store_sync=self.live,
            events=self.events,
            cache=node_cache(settings),
        )
        self.advancer = Advancer(self.engine, self.dispatcher, registry, settings)
        # Inline runs only: their leases and slots (the workers sweep for everyone).
        self.supervisor = Supervisor(
            store, settings, owner=self.engine.owner, active=lambda: self.engine.active
        )
        self.advancer.supervisor = self.supervisor
        self._inline_queue = FairQueue(settings.slots_per_tenant)
        self._inline: set[asyncio.Task] = set()
        self._tasks: list[asyncio.Task] = []

    @property
    def worker(self) -> str:
        return self.engine.worker

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="pocketrun-changes"),
            *(
                asyncio.create_task(self._inline_slot(), name=f"pocketrun-inline-{i}")
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
        try:
            await self.dispatcher.publish(run_id, queue, priority)
        except Exception as exc:  # recorded in the database: the sweeper sends it later
            log.warning("broker unavailable; the sweeper will dispatch the run", error=repr(exc))

    async def run_inline(
        self, run_id: uuid.UUID, budget: float, *, tenant: str = "default", priority: int = 0
    ) -> None:
        remember(run_id)
        until = asyncio.get_running_loop().time() + budget
        self._inline_queue.put(run_id, tenant, priority, inline_until=until)

    async def _inline_slot(self) -> None:
        while True:
            waiting = await self._inline_queue.take()
            carry = asyncio.create_task(self._carry_inline(waiting))
            self._inline.add(carry)  # what stop() drains
            try:
                await asyncio.shield(carry)
            finally:
                self._inline.discard(carry)
                self._inline_queue.done(waiting.tenant)

    async def _carry_inline(self, waiting: Waiting) -> None:
        assert waiting.inline_until is not None
        try:
            left = waiting.inline_until - asyncio.get_running_loop().time()
            if self.engine.stopping.is_set() or left <= 0:  # its caller is gone: to the workers
                head = await self.runs.head(waiting.run_id)
                if head is not None:
                    await self.submit(waiting.run_id, priority=head.priority, queue=head.queue)
            else:
                await self.advancer.advance(waiting.run_id, left)
        except Exception:
            log.exception("an inline run failed to advance; the sweeper carries it on")

    async def _listen(self) -> None:
        while True:
            client = redis_client(self.settings.redis_url, socket_timeout=None)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGES_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        with contextlib.suppress(ValueError, AttributeError):
                            self.changes.publish(uuid.UUID(message["data"].decode()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("change feed disconnected", error=repr(exc))
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def stop(self) -> None:
        """Inline runs stop at their next checkpoint and continue on the workers."""
        self.engine.stopping.set()
        for waiting in self._inline_queue.drain():  # never got a slot here: to the workers
            await self._carry_inline(waiting)
        if self._inline:
            _, pending = await asyncio.wait(list(self._inline), timeout=self.settings.drain_grace)
            for task in pending:
                task.cancel()
        await self.supervisor.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.engine.threads.shutdown(wait=False, cancel_futures=True)
        if self.live is not None:
            await self.live.flush()  # the last steps' Redis applies and notifications
        await self.events.flush()
        await self.changes.close()
        for client in {id(self.redis): self.redis, id(self.broker): self.broker}.values():
            with contextlib.suppress(Exception):
                await client.aclose()

    async def health(self) -> dict[str, Any]:
        body: dict[str, Any] = {"executor": self.name, "worker": self.worker}
        ok = True
        for label, client in (("redis", self.redis), ("broker", self.broker)):
            try:
                await asyncio.wait_for(client.ping(), 2)
                body[label] = "ok"
            except Exception as exc:
                body[label] = f"error: {type(exc).__name__}"
                ok = False
        try:
            names, processes = await self.runs.count_live_workers()
            body["workers"] = names
            body["worker_processes"] = processes
            WORKERS_ALIVE.set(names)
            if names < self.settings.ready_min_workers:
                ok = False
        except Exception as exc:
            body["workers"] = f"error: {type(exc).__name__}"
            ok = False
        if body.get("broker") == "ok":
            with contextlib.suppress(Exception):
                queues = sorted({spec.queue for spec in self.registry.all()})
                body["queued"] = await self.dispatcher.depth(queues)
                QUEUE_DEPTH.set(sum(body["queued"].values()))
        body["inline"] = len(self._inline)
        body["ready"] = ok
        return body
