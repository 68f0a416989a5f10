"""The interface the API hands runs to; ``local`` and ``celery`` implement it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from core.changes import ChangeFeed
from db.store import Dispatch
from workers.live import EventSource


class Executor(Protocol):
    name: str
    changes: ChangeFeed
    events: EventSource  # where this process's event streams get live events

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Drain: let in-flight steps finish within the grace period, release leases."""

    async def submit(
        self,
        run_id: uuid.UUID,
        *,
        priority: int = 0,
        queue: str = "default",
        tenant: str = "default",
    ) -> None:
        """Queue a run that is already recorded in the database."""

    async def run_inline(
        self, run_id: uuid.UUID, budget: float, *, tenant: str = "default", priority: int = 0
    ) -> None:
        """Queue the run for a slot in this process; it advances here for what is left of
        ``budget`` seconds, then (or if no slot came in time) carries on in the background."""

    async def health(self) -> dict[str, Any]: ...


def hand_over_to(executor: Executor) -> Callable[[list[Dispatch]], Awaitable[None]]:
    """Runs made outside a request (a schedule's tick) go to ``executor``."""

    async def hand_over(found: list[Dispatch]) -> None:
        for run in found:
            await executor.submit(run.id, priority=run.priority, queue=run.queue, tenant=run.tenant)

    return hand_over
