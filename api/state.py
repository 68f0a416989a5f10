"""What the app holds for its lifetime; routes reach it through ``api.deps``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

from api.admission import Admission
from core.settings import Settings
from db.store import TERMINAL, RunStore
from flows.registry import Registry
from workers.executor import Executor
from workers.scheduler import Scheduler

SETTLED = (*TERMINAL, "waiting", "paused")  # nothing happens to these by itself


@dataclass
class AppState:
    settings: Settings
    store: RunStore
    registry: Registry
    executor: Executor
    admission: Admission
    scheduler: Scheduler | None = None  # fires due schedules here (SCHEDULER=true)
    tasks: set[asyncio.Task] = field(default_factory=set)
    draining: asyncio.Event = field(default_factory=asyncio.Event)  # long polls answer now

    def spawn(self, coro) -> asyncio.Task:
        """A task that outlives the request that started it."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait_for_change(
        self, run_id: uuid.UUID, timeout: float, *, since_version: int | None = None
    ) -> None:
        """Return when the run's version passes ``since_version`` (or, without it, when the
        run is settled: terminal, or waiting for an answer or an unpause that only someone
        else can give), or when ``timeout`` runs out, or when the process starts draining.
        Polls the database as a backstop, so changes made by other processes are seen too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.executor.changes.watch(run_id) as changed:
                current = await self.store.version(run_id)
                if current is None:
                    return
                version, status = current
                if since_version is not None and version != since_version:
                    return
                if since_version is None and status in SETTLED:
                    return
                remaining = deadline - loop.time()
                if remaining <= 0 or self.draining.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, 0.5))
