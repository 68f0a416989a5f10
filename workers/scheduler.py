"""Schedules fire in every API and worker process that is up; each tick starts one run.

Each process looks for due schedules of the flows it has loaded, and for each one:

1. creates the tick's run with the idempotency key ``schedule:<id>:<tick>``, so however
   many processes fire one tick, the database keeps one run;
2. hands a new run to its executor;
3. moves the schedules of the batch on to their next ticks, in one transaction, each
   with an update conditional on the tick it read.

A process that dies between 1 and 3 leaves the tick due; whoever fires it next finds the
run made already and only moves the schedule on. A tick found more than
``SCHEDULE_CATCH_UP`` seconds after the tick that followed it fell in downtime: that one
run stands for every tick missed, and the schedule goes on from now.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from core.cron import first_tick, next_of, tick_after
from core.errors import NotFound, PocketrunError
from core.ids import uuid7
from core.settings import Settings
from db import schedules as sql
from db.store import Dispatch, Idempotency, RunStore
from flows.registry import Registry
from workers.admission import HandOver
from workers.new_runs import new_run

log = structlog.get_logger("pocketrun.scheduler")

BATCH = 200  # due schedules read at once
FIRING = 16  # of them fired at once
CODE_TENANT = "default"


def trigger_of(schedule: Mapping[str, Any], tick: datetime) -> dict[str, Any]:
    return {"type": "schedule", "id": str(schedule["id"]), "tick": tick.isoformat()}


class Scheduler:
    def __init__(
        self, store: RunStore, registry: Registry, settings: Settings, hand_over: HandOver
    ) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        self.hand_over = hand_over
        self._wake = asyncio.Event()
        self._firing = asyncio.Semaphore(FIRING)

    def wake(self) -> None:
        """A schedule changed in this process: look again now."""
        self._wake.set()

    async def run(self) -> None:
        await self._declare_code_schedules()
        fired_at: datetime | None = None  # the soonest tick the last firing started from
        while True:
            self._wake.clear()
            try:
                soonest, wait = await self._wait()
                if wait <= 0:
                    if soonest != fired_at:
                        fired_at = soonest
                        await self.tick()
                        continue
                    # the tick just fired is still the soonest: try it again after a poll
                    fired_at, wait = None, self.settings.schedule_poll
            except Exception as exc:  # the database is away: try again later
                log.warning("firing schedules failed", error=repr(exc))
                fired_at, wait = None, self.settings.schedule_poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def tick(self) -> int:
        """Fire every due schedule of a flow loaded here; how many runs this process made."""
        made = 0
        while True:
            now = await self.store.now()
            due = await sql.due(self.store, now, BATCH, self._flows())
            if not due:
                return made
            fired = await asyncio.gather(*(self._fire(s, now) for s in due))
            await sql.advance(self.store, [f for f, _ in fired])
            made += sum(created for _, created in fired)
            if len(due) < BATCH:
                return made

    async def _wait(self) -> tuple[datetime | None, float]:
        """The soonest tick of a flow loaded here, and the seconds until it (at most the
        poll interval, which is what notices schedules other processes add)."""
        soonest = await sql.soonest(self.store, self._flows())
        if soonest is None:
            return None, self.settings.schedule_poll
        ahead = (soonest - await self.store.now()).total_seconds()
        return soonest, min(ahead, self.settings.schedule_poll)

    def _flows(self) -> list[str]:
        return sorted({spec.name for spec in self.registry.all()})

    async def _fire(self, schedule: Mapping[str, Any], now: datetime) -> tuple[sql.Fired, bool]:
        """Make the tick's run (or find it made); where the schedule goes next."""
        async with self._firing:
            tick = schedule["next_run_at"]
            timing = (schedule["cron"], schedule["every"], schedule["timezone"])
            following = next_of(*timing, tick)
            caught_up = following <= now - timedelta(seconds=self.settings.schedule_catch_up)
            next_tick = tick_after(*timing, tick, now) if caught_up else following
            run_id, created, error = None, False, None
            try:
                run_id, created = await self._start(schedule, tick)
            except (NotFound, ValidationError, PocketrunError) as exc:
                error = _reason(exc)
                log.warning("a schedule could not start its run", schedule=str(schedule["id"]))
            if caught_up and created:
                log.info("a schedule caught up after downtime", schedule=str(schedule["id"]))
            return sql.Fired(schedule["id"], tick, next_tick, run_id, error), created

    async def _start(self, schedule: Mapping[str, Any], tick: datetime) -> tuple[uuid.UUID, bool]:
        spec = self.registry.get(schedule["flow"], schedule["version"])
        new = new_run(
            spec,
            spec.validate_input(schedule["input"]),
            tenant=schedule["tenant"],
            principal=schedule["created_by"],
            trigger=trigger_of(schedule, tick),
            mode="background",
            tenant_limit=self.settings.tenant_concurrency,
        )
        key = f"schedule:{schedule['id']}:{tick.isoformat()}"
        idem = Idempotency(key, "schedule", self.settings.idempotency_ttl)
        row, created = await self.store.create(new, idem)
        if created and not row["held"]:
            await self.hand_over([Dispatch(row["id"], spec.queue, 0, new.tenant)])
        return row["id"], created

    async def _declare_code_schedules(self) -> None:
        """Schedules declared with ``register(..., schedules=...)``; every process does it."""
        now = await self.store.now()
        rows = []
        for spec in self.registry.all():
            for declared in spec.schedules:
                rows.append(
                    {
                        "id": uuid7(),
                        "tenant": CODE_TENANT,
                        "name": declared.name,
                        "flow": spec.name,
                        "version": None,
                        "cron": declared.cron,
                        "every": declared.every,
                        "timezone": declared.timezone,
                        "input": spec.validate_input(declared.input),
                        "enabled": declared.enabled,
                        "next_run_at": first_tick(
                            declared.cron, declared.every, declared.timezone, now
                        ),
                        "created_at": now,
                        "created_by": "code",
                        "updated_at": now,
                    }
                )
        try:
            await sql.declare(self.store, rows)
        except Exception as exc:
            log.warning("declaring the schedules in code failed", error=repr(exc))


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "the schedule's input does not match the flow's schema: " + str(exc)
    return getattr(exc, "detail", None) or str(exc)
