"""Whether a tenant may start one more run: its unfinished runs, and who may jump the line.

The count of a tenant's unfinished runs is read from the store at most once a second
per tenant and carried forward by the runs this process admits meanwhile, so a flood
costs one index-only count a second, not one per request. Other processes' admissions
within that second are seen at the next read: the limit holds to within a second's worth.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from core.errors import Forbidden, RateLimited
from core.principal import Principal, Role
from core.settings import Settings
from db.store import RunStore

REFRESH_SECONDS = 1.0
MAX_TENANTS_KEPT = 10_000


@dataclass(slots=True)
class _Load:
    unfinished: int
    read_at: float


class Admission:
    def __init__(self, store: RunStore, settings: Settings) -> None:
        self.store = store
        self.limit = settings.tenant_max_unfinished
        self.priority_ceiling = settings.priority_ceiling
        self._loads: dict[str, _Load] = {}
        self._reads: dict[str, asyncio.Future[_Load]] = {}  # one count at a time per tenant

    def check_priority(self, principal: Principal, priority: int) -> None:
        if priority > self.priority_ceiling and principal.role.rank < Role.operator.rank:
            raise Forbidden(
                f"priority {priority} is above {self.priority_ceiling}, the highest a consumer "
                "may set; higher priorities need the operator role or above"
            )

    async def admit(self, tenant: str) -> None:
        """Raise 429 when the tenant already has its limit of unfinished runs."""
        now = time.monotonic()
        load = self._loads.get(tenant)
        if load is None or now - load.read_at >= REFRESH_SECONDS:
            load = await asyncio.shield(self._read(tenant, now))
        if load.unfinished >= self.limit:
            raise RateLimited(
                f"tenant '{tenant}' has {load.unfinished} unfinished runs, its limit is "
                f"{self.limit}; retry when some have finished",
                retry_after=max(1, round(REFRESH_SECONDS - (now - load.read_at))),
            )

    def _read(self, tenant: str, now: float) -> asyncio.Future[_Load]:
        read = self._reads.get(tenant)
        if read is None:

            async def count() -> _Load:
                try:
                    load = _Load(await self.store.count_unfinished(tenant), now)
                finally:
                    del self._reads[tenant]
                if len(self._loads) >= MAX_TENANTS_KEPT:
                    self._loads.clear()
                self._loads[tenant] = load
                return load

            read = self._reads[tenant] = asyncio.ensure_future(count())
        return read

    def admitted(self, tenant: str) -> None:
        load = self._loads.get(tenant)
        if load is not None:
            load.unfinished += 1
