"""One supervisor per process: liveness, leases and slots of runs in progress, the sweeper.

Both executors and the Celery worker processes use it; it is the only thing that renews
what a process holds, and only for the runs it is advancing right now. Every duty is timed
by the database's clock (the store's SQL), never this process's own.

A process that runs flows says which it has loaded (``RunStore.sync_flows``): at start and
then every third of ``FLOW_MISSING_GRACE`` (at most a minute), so that a run whose version
only a process gone for longer had loaded can fail ``flow_changed`` (``workers.engine``).

A process that sweeps also runs retention (``workers.retention``) when ``RETENTION_DAYS``
is set: every ``RETENTION_INTERVAL`` seconds, as a task of its own so that a long pass never
delays a renewal, under a named lock so that one process at a time deletes.

It is watched: if it dies, or cannot renew for longer than the lease TTL (its leases are
gone by then and another process may carry its runs on), it stops its process rather than
letting it run unleased.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import structlog

from core.metrics import SUPERVISOR_FAILURES
from core.settings import Settings
from db.store import RunStore
from workers.retention import RETENTION_LOCK, Retention

log = structlog.get_logger("pocketrun.supervisor")

SWEEPER_LOCK = "sweeper"
PRUNE_EVERY = 600.0
FLOWS_SEEN_EVERY = 60.0  # at most; a third of FLOW_MISSING_GRACE when that is shorter


@dataclass(slots=True)
class Registration:
    """How the process appears in the worker registry."""

    worker_id: str
    name: str
    queues: list[str]


def stop_this_process(reason: BaseException | str) -> None:
    """The default for a supervisor that failed: SIGTERM drains the process."""
    log.critical("supervisor failed; stopping the process", reason=repr(reason))
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    def __init__(
        self,
        store: RunStore,
        settings: Settings,
        *,
        owner: str,
        active: Callable[[], Collection[uuid.UUID]],
        registration: Registration | None = None,
        sweep: Callable[[bool], Awaitable[None]] | None = None,
        flows: list[tuple[str, str, str, str]] | None = None,
        on_failure: Callable[[BaseException | str], None] = stop_this_process,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.active = active
        self.registration = registration
        self.sweep = sweep
        self.flows = flows  # (name, version, graph hash, description) this process runs
        self.flows_every = max(min(FLOWS_SEEN_EVERY, settings.flow_missing_grace / 3), 0.1)
        self.on_failure = on_failure
        self.interval = min(settings.lease_ttl / 3, settings.sweep_interval)
        if registration is not None:
            self.interval = min(self.interval, settings.worker_heartbeat)
        self.lock_ttl = max(3 * settings.sweep_interval, 3 * self.interval, 5.0)
        self.pending_releases: set[tuple[str, uuid.UUID]] = set()  # slots to free again
        self._renewed_at = time.monotonic()
        self._next_sweep = 0.0
        self._next_prune = 0.0
        self._next_retention = 0.0
        self._next_flows = 0.0
        self._retention: asyncio.Task | None = None
        self._swept_once = False
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="pocketrun-supervisor")
        self._task.add_done_callback(self._watch)

    def _watch(self, task: asyncio.Task) -> None:
        if self._stopping or task.cancelled():
            return
        self.on_failure(task.exception() or "the supervisor returned")

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        """One round of every duty; each failure is logged and counted, none stops the rest."""
        if self.registration is not None:
            await self._duty("heartbeat", self._heartbeat())
        if await self._duty("renew", self._renew()):
            self._renewed_at = time.monotonic()
        elif time.monotonic() - self._renewed_at > self.settings.lease_ttl and self.active():
            self._stopping = True
            self.on_failure(f"leases not renewed for over {self.settings.lease_ttl:g}s (LEASE_TTL)")
            return
        if self.pending_releases:
            await self._duty("release_slots", self._release_pending())
        now = time.monotonic()
        if self.flows and now >= self._next_flows:
            self._next_flows = now + self.flows_every
            await self._duty("flows_seen", self.store.sync_flows(self.flows))
        if self.sweep is not None and now >= self._next_sweep:
            self._next_sweep = now + self.settings.sweep_interval
            await self._duty("sweep", self._sweep())
        if self._retains and now >= self._next_retention:
            self._next_retention = now + self.settings.retention_interval
            if self._retention is None or self._retention.done():
                self._retention = asyncio.get_running_loop().create_task(
                    self._duty("retention", self._retain()), name="pocketrun-retention"
                )
        if self.registration is not None and now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            await self._duty("prune", self.store.prune_workers())

    async def _duty(self, name: str, work: Awaitable[object]) -> bool:
        try:
            await work
        except Exception as exc:
            SUPERVISOR_FAILURES.labels(name).inc()
            log.warning("supervisor duty failed", duty=name, error=repr(exc))
            return False
        return True

    async def _heartbeat(self) -> None:
        reg = self.registration
        assert reg is not None
        await self.store.heartbeat(
            reg.worker_id,
            name=reg.name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=reg.queues,
            running=[str(r) for r in list(self.active())],
            ttl=self.settings.worker_ttl,
        )

    async def _renew(self) -> None:
        current = list(self.active())
        await self.store.renew(self.owner, self.settings.lease_ttl, current)
        await self.store.renew_slots(self.owner, self.settings.lease_ttl, current)

    async def _release_pending(self) -> None:
        for flow, run_id in list(self.pending_releases):
            await self.store.release_slot(flow, run_id, self.owner)
            self.pending_releases.discard((flow, run_id))

    @property
    def _retains(self) -> bool:
        return self.sweep is not None and self.settings.retention_days > 0

    @property
    def _lock_owner(self) -> str:
        return self.registration.worker_id if self.registration else self.owner

    async def _retain(self) -> None:
        async def still_ours() -> bool:
            return await self.store.try_lock(RETENTION_LOCK, self._lock_owner, self.lock_ttl)

        if await still_ours():
            await Retention(self.store, self.settings, still_ours=still_ours).run_once()

    async def _sweep(self) -> None:
        if self.sweep is None:
            return
        if await self.store.try_lock(SWEEPER_LOCK, self._lock_owner, self.lock_ttl):
            first = not self._swept_once
            self._swept_once = True
            await self.sweep(first)

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._retention):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        lock_owner = self._lock_owner
        with contextlib.suppress(Exception):
            if self.sweep is not None:
                await self.store.unlock(SWEEPER_LOCK, lock_owner)
            if self._retains:
                await self.store.unlock(RETENTION_LOCK, lock_owner)
            if self.registration is not None:
                await self.store.forget_worker(self.registration.worker_id)
