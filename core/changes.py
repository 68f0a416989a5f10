"""Change notifications for long polls: "run R has a new version"."""

from __future__ import annotations

import asyncio
import uuid


class ChangeFeed:
    """In-process feed; executors in other processes publish through their own feed."""

    def __init__(self) -> None:
        self._events: dict[uuid.UUID, asyncio.Event] = {}

    def waiter(self, run_id: uuid.UUID) -> asyncio.Event:
        """Take this before reading the run, then wait on it: no change slips between."""
        event = self._events.get(run_id)
        if event is None:
            event = self._events[run_id] = asyncio.Event()
        return event

    def publish(self, run_id: uuid.UUID) -> None:
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()

    async def close(self) -> None:
        for event in self._events.values():
            event.set()
        self._events.clear()
