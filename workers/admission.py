"""Tenant fairness across processes: no tenant has more than ``TENANT_CONCURRENCY`` runs
in flight (queued for an executor or running), whatever it floods in.

A run created past its tenant's limit is held in the database (``RunStore.create``
decides, in the run's own insert). When one of the tenant's runs ends or stops, the
process it ran on hands over as many of the tenant's held runs as it now has room for,
highest priority first, then oldest (``release_held``); each sweep does the same for
every tenant with runs held, which covers runs that ended in a process that died. So
another tenant's next run is never behind a flooding tenant's backlog, only behind the
runs that tenant has in flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from db.store import Dispatch, RunStore
from workers.engine import Outcome

log = structlog.get_logger("pocketrun.admission")

# Outcomes of an advance after which the run no longer counts against its tenant's limit.
LEFT_FLIGHT = frozenset({Outcome.finished, Outcome.stopped, Outcome.skipped})

HandOver = Callable[[list[Dispatch]], Awaitable[None]]


async def release_held(store: RunStore, tenant: str, limit: int, hand_over: HandOver) -> int:
    """Hand over the tenant's held runs it has room for (``limit`` unless the tenant has
    an override); how many went. Never raises: what fails here the next sweep does."""
    try:
        found = await store.admit_held(tenant, limit)
        if found:
            await hand_over(found)
        return len(found)
    except Exception as exc:
        log.warning("releasing held runs failed", tenant=tenant, error=repr(exc))
        return 0


async def release_all_held(store: RunStore, limit: int, hand_over: HandOver) -> int:
    """``release_held`` for every tenant with runs held: a sweep's share."""
    try:
        tenants = await store.held_tenants()
    except Exception as exc:
        log.warning("listing tenants with held runs failed", error=repr(exc))
        return 0
    released = 0
    for tenant in tenants:
        released += await release_held(store, tenant, limit, hand_over)
    return released
