"""Retention: finished runs, their steps and idempotency keys go ``RETENTION_DAYS`` after
they finished; the audit log stays.

A pass deletes the oldest first, in small transactions: at most ``RETENTION_BATCH`` runs
and about ``RETENTION_BATCH_STEPS`` step rows each (a longer run's steps go in chunks of
that many first), yielding to the event loop between them. On SQLite every write shares
one writer with the engine's checkpoints, so a transaction's size is what a checkpoint may
wait behind. One process at a time runs it (the supervisor's named lock).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator

import structlog

from core.metrics import RUNS_DELETED
from core.settings import Settings
from db.store import RunStore

log = structlog.get_logger("pocketrun.retention")

RETENTION_LOCK = "retention"
DAY = 86400.0


def batches(
    found: list[tuple[uuid.UUID, int]], max_steps: int
) -> Iterator[list[tuple[uuid.UUID, int]]]:
    """``found`` (run id, seq) cut into groups of about ``max_steps`` step rows each; a run
    with more rows than that is a group of its own."""
    group: list[tuple[uuid.UUID, int]] = []
    rows = 0
    for run_id, seq in found:
        n = seq + 1  # a failed run keeps one more row than its seq counts
        if group and rows + n > max_steps:
            yield group
            group, rows = [], 0
        group.append((run_id, seq))
        rows += n
    if group:
        yield group


class Retention:
    def __init__(
        self,
        store: RunStore,
        settings: Settings,
        *,
        still_ours: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.older_than = settings.retention_days * DAY
        self.batch = settings.retention_batch
        self.max_steps = settings.retention_batch_steps
        self.still_ours = still_ours  # renews the lock between transactions; False: stop

    async def run_once(self) -> int:
        """One pass, until no finished run is old enough; returns the runs deleted."""
        deleted = 0
        while True:
            found = await self.store.expired_runs(self.older_than, self.batch)
            gone = 0
            for group in batches(found, self.max_steps):
                if not await self._carry_on():
                    return deleted
                gone += await self._purge(group)
            deleted += gone
            if len(found) < self.batch or gone == 0:
                if deleted:
                    log.info("retention deleted finished runs", runs=deleted)
                return deleted

    async def _purge(self, group: list[tuple[uuid.UUID, int]]) -> int:
        for run_id, seq in group:
            for up_to in range(self.max_steps, seq + 1, self.max_steps):
                await self.store.purge_steps(run_id, up_to, self.older_than)
                if not await self._carry_on():
                    return 0
        gone = await self.store.purge_runs([run_id for run_id, _ in group], self.older_than)
        RUNS_DELETED.inc(gone)
        return gone

    async def _carry_on(self) -> bool:
        await asyncio.sleep(0)  # let checkpoints queued meanwhile go first
        return self.still_ours is None or await self.still_ours()
