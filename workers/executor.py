"""The interface the API hands runs to; ``local`` and ``celery`` implement it."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from core.changes import ChangeFeed
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
