"""One delivery of "advance run R", shared by the Celery workers and the API's inline runs.

Read the run's head (cheap, no write: a duplicate delivery of a finished or live-leased run
stops here), take a slot of the flow's concurrency limit if it has one (or requeue the run
a little later), advance it for one time slice, release the slot on every path, and requeue
the run when it paused. A run whose flow version this process lacks is left queued
(``Outcome.left``): the sweeper sends it again after ``REDISPATCH_AFTER``, to whichever
worker takes it, and it fails ``flow_changed`` only past ``FLOW_MISSING_GRACE``.
The database decides everything; a lost message or a crash only delays the run until the
sweeper (``workers.celery_app``) sends it again.
"""

from __future__ import annotations

import contextlib
import uuid

import structlog

from core.faults import fault_point
from core.settings import Settings
from db.store import CLAIMABLE, Dispatch, RunHead, RunStore
from flows.registry import Registry
from workers.admission import LEFT_FLIGHT, HandOver, release_all_held, release_held
from workers.dispatch import Dispatcher
from workers.engine import Outcome, RunEngine
from workers.supervisor import Supervisor

log = structlog.get_logger("pocketrun.distributed")


def to_broker(dispatcher: Dispatcher) -> HandOver:
    """Held runs released here go to the workers through the broker."""

    async def publish(found: list[Dispatch]) -> None:
        await dispatcher.publish_many((d.id, d.queue, d.priority) for d in found)

    return publish


async def release_held_runs(store: RunStore, dispatcher: Dispatcher, settings: Settings) -> int:
    """A sweep's share of tenant fairness."""
    return await release_all_held(store, settings.tenant_concurrency, to_broker(dispatcher))


class Advancer:
    def __init__(
        self,
        engine: RunEngine,
        dispatcher: Dispatcher,
        registry: Registry,
        settings: Settings,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.registry = registry
        self.settings = settings
        self.supervisor: Supervisor | None = None  # retries slot releases that failed
        self._to_broker = to_broker(dispatcher)

    @property
    def store(self) -> RunStore:
        return self.engine.store

    async def advance(self, run_id: uuid.UUID, budget: float | None) -> str:
        head = await self.store.head(run_id)
        if head is None:
            return Outcome.skipped.value
        if head.status not in CLAIMABLE:
            await self._release_held(head.tenant)  # e.g. cancelled while queued
            return Outcome.skipped.value
        if head.leased_by not in (None, self.engine.owner):
            return Outcome.skipped.value  # a duplicate delivery: someone live carries it on
        spec = self.registry.find(head.flow, head.flow_version)
        limit = spec.concurrency if spec is not None else None
        if limit and not await self.store.acquire_slot(
            head.flow, run_id, self.engine.owner, limit, self.settings.lease_ttl
        ):
            await self.requeue(head, countdown=self.settings.throttle_delay)
            return "throttled"
        try:
            outcome = await self.engine.advance(run_id, budget=budget)
        except Exception:
            log.exception("advancing the run failed; requeued", run_id=str(run_id))
            with contextlib.suppress(Exception):
                await self.store.release(run_id, self.engine.owner)
            await self.requeue(head, countdown=1.0)
            return "error"
        finally:
            if limit:
                await self._release_slot(head.flow, run_id)
        if outcome is Outcome.yielded:
            await self.requeue(head)
        elif outcome in LEFT_FLIGHT:
            await self._release_held(head.tenant)
        return outcome.value

    async def _release_held(self, tenant: str) -> None:
        """One of the tenant's runs left flight here: its held runs with room go on."""
        await release_held(self.store, tenant, self.settings.tenant_concurrency, self._to_broker)

    async def _release_slot(self, flow: str, run_id: uuid.UUID) -> None:
        """Free the run's slot; when that fails the supervisor tries again, and the slot is
        no longer renewed (its run is not in progress here), so it expires at worst."""
        try:
            fault_point("slot_release")
            await self.store.release_slot(flow, run_id, self.engine.owner)
        except Exception as exc:
            log.warning("slot release failed", run_id=str(run_id), error=repr(exc))
            if self.supervisor is not None:
                self.supervisor.pending_releases.add((flow, run_id))

    async def requeue(self, head: RunHead, *, countdown: float = 0) -> None:
        """Send the run's next message; if that fails, the sweeper sends it later."""
        try:
            await self.store.mark_dispatched(head.id)
            await self.dispatcher.publish(head.id, head.queue, head.priority, countdown=countdown)
        except Exception as exc:
            log.warning(
                "requeue failed; the sweeper will resend", run_id=str(head.id), error=repr(exc)
            )
