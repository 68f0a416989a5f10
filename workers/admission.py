"""Tenant fairness across processes: no tenant has more than its ``TENANT_CONCURRENCY``
runs in flight (queued for an executor or running), whatever it floods in.

A run is admitted when it is handed to an executor (``RunStore.admit``): with room, it
goes on at once; without, it stays queued in the database, held. When one of a tenant's
runs ends or stops here, its held runs are looked at again, highest priority first, then
oldest; each sweep does the same for every tenant with runs held, for the runs whose
tenant's runs ended in a process that died. So another tenant's next run is never behind
a flooding tenant's backlog, only behind the runs that tenant has in flight.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import structlog

from db.store import Dispatch, RunStore

log = structlog.get_logger("pocketrun.admission")

HandOver = Callable[[Dispatch], Awaitable[None]]


class Admission:
    def __init__(self, store: RunStore, default_limit: int, hand_over: HandOver) -> None:
        self.store = store
        self.default_limit = default_limit
        self.hand_over = hand_over
        self._ended: set[str] = set()  # tenants whose runs ended since the last look
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def admit(self, run_id: uuid.UUID, tenant: str) -> bool:
        """True: hand the run over now. False: it is held (or the store is unreachable,
        and the sweeper hands it over later)."""
        try:
            return await self.store.admit(run_id, tenant, self.default_limit)
        except Exception as exc:
            log.warning("admission failed; the sweeper offers the run later", error=repr(exc))
            return False

    def ended(self, tenant: str) -> None:
        """One of the tenant's runs ended or stopped here: its held runs may go on."""
        self._ended.add(tenant)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._release_ended(), name="pocketrun-admission")

    async def release(self, tenant: str) -> int:
        """Hand over the tenant's held runs it has room for; how many went."""
        found = await self.store.admit_held(tenant, self.default_limit)
        for dispatch in found:
            await self.hand_over(dispatch)
        return len(found)

    async def sweep(self) -> None:
        for tenant in await self.store.held_tenants():
            await self.release(tenant)

    async def _release_ended(self) -> None:
        # Many runs ending at once cost one look per tenant, not one per run.
        while self._ended:
            self._wake.clear()
            tenants, self._ended = self._ended, set()
            for tenant in tenants:
                try:
                    await self.release(tenant)
                except Exception as exc:  # the next sweep looks again
                    log.warning("releasing held runs failed", tenant=tenant, error=repr(exc))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
