"""Change notifications for long polls: "run R has a new version"."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from core.metrics import CHANGE_WAITERS


@dataclass
class _Entry:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


class ChangeFeed:
    """In-process feed; executors in other processes publish through their own feed.

    It holds an entry for a run only while someone waits on it: the last waiter to leave
    (changed, timed out or cancelled) removes it, and so does a publish."""

    def __init__(self) -> None:
        self._entries: dict[uuid.UUID, _Entry] = {}

    @property
    def watched(self) -> int:
        """How many runs someone waits on now (the feed's entries)."""
        return len(self._entries)

    @contextlib.contextmanager
    def watch(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """Enter this before reading the run, then wait on the event inside: no change slips
        between. The event is set by the next publish for the run."""
        entry = self._entries.get(run_id)
        if entry is None:
            entry = self._entries[run_id] = _Entry()
            CHANGE_WAITERS.inc()
        entry.waiters += 1
        try:
            yield entry.event
        finally:
            entry.waiters -= 1
            if entry.waiters == 0 and self._entries.get(run_id) is entry:
                self._remove(run_id)

    def publish(self, run_id: uuid.UUID) -> None:
        entry = self._remove(run_id)
        if entry is not None:
            entry.event.set()

    async def close(self) -> None:
        for run_id in list(self._entries):
            self.publish(run_id)

    def _remove(self, run_id: uuid.UUID) -> _Entry | None:
        entry = self._entries.pop(run_id, None)
        if entry is not None:
            CHANGE_WAITERS.dec()
        return entry
