"""Runs waiting for one of this process's slots, handed out fairly across tenants.

The next run comes from the tenant with the fewest runs in flight here (ties: the tenant
served longest ago), and within a tenant by priority, a waiting caller's run (inline)
before background ones, then first come first served. No tenant holds more than
``tenant_slots`` slots, so whatever one tenant floods in, the others find a slot free.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections import deque
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class Waiting:
    sort: tuple[int, int, int]
    run_id: uuid.UUID = field(compare=False)
    tenant: str = field(compare=False)
    inline_until: float | None = field(compare=False, default=None)  # loop time

    @property
    def priority(self) -> int:
        return -self.sort[0]


class FairQueue:
    def __init__(self, tenant_slots: int) -> None:
        self.tenant_slots = tenant_slots
        self._waiting: dict[str, list[Waiting]] = {}
        self._running: dict[str, int] = {}
        self._served: dict[str, int] = {}  # tenant -> when it last got a slot (a counter)
        self._order = itertools.count()
        self._turn = itertools.count()
        self._takers: deque[asyncio.Future[None]] = deque()
        self._size = 0

    def qsize(self) -> int:
        return self._size

    def put(
        self,
        run_id: uuid.UUID,
        tenant: str,
        priority: int = 0,
        *,
        inline_until: float | None = None,
    ) -> None:
        sort = (-priority, 0 if inline_until is not None else 1, next(self._order))
        heapq.heappush(
            self._waiting.setdefault(tenant, []), Waiting(sort, run_id, tenant, inline_until)
        )
        self._size += 1
        self._wake()

    async def take(self) -> Waiting:
        """The next run to advance; its tenant's slot is held until ``done(tenant)``."""
        while (tenant := self._next_tenant()) is None:
            woken = asyncio.get_running_loop().create_future()
            self._takers.append(woken)
            try:
                await woken
            except asyncio.CancelledError:
                if woken.done() and not woken.cancelled():
                    self._wake()  # woken, then cancelled: hand the wake-up on
                raise
        heap = self._waiting[tenant]
        item = heapq.heappop(heap)
        if not heap:
            del self._waiting[tenant]
        self._size -= 1
        self._running[tenant] = self._running.get(tenant, 0) + 1
        self._served[tenant] = next(self._turn)
        if self._next_tenant() is not None:
            self._wake()  # more can start: pass the turn on
        return item

    def done(self, tenant: str) -> None:
        left = self._running.get(tenant, 0) - 1
        if left > 0:
            self._running[tenant] = left
        else:
            self._running.pop(tenant, None)
            if tenant not in self._waiting:
                self._served.pop(tenant, None)
        self._wake()

    def drain(self) -> list[Waiting]:
        """Everything still waiting, taken out of the queue."""
        items = [item for heap in self._waiting.values() for item in heap]
        self._waiting.clear()
        self._size = 0
        return items

    def _next_tenant(self) -> str | None:
        best, best_key = None, None
        for tenant in self._waiting:
            running = self._running.get(tenant, 0)
            if running >= self.tenant_slots:
                continue
            key = (running, self._served.get(tenant, -1))
            if best_key is None or key < best_key:
                best, best_key = tenant, key
        return best

    def _wake(self) -> None:
        while self._takers:
            taker = self._takers.popleft()
            if not taker.done():
                taker.set_result(None)
                return
