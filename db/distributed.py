"""The database side of distributed execution: dispatch bookkeeping, the sweeper's query,
per-flow concurrency slots, worker heartbeats and named locks.

Everything here is a lease with an expiry, so a process that dies holding one delays others
by at most its TTL and never blocks them for good.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from db.database import Database
from db.models import flow_slots, locks, runs, workers
from db.types import utcnow

CLAIMABLE = ("queued", "running")


@dataclass(slots=True)
class RunHead:
    """What a worker reads before it claims: enough to route, throttle and requeue."""

    id: uuid.UUID
    flow: str
    flow_version: str
    status: str
    queue: str
    priority: int
    seq: int
    current_node: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None

    def leased_by_other(self, owner: str, now: datetime) -> bool:
        return (
            self.lease_owner is not None
            and self.lease_owner != owner
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


@dataclass(slots=True)
class Dispatch:
    id: uuid.UUID
    queue: str
    priority: int


@dataclass(slots=True)
class LiveWorker:
    id: str
    name: str
    hostname: str
    pid: int
    queues: list[str]
    running: list[str]
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime


class Distributed:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _upsert(self, table, rows, keys: list[str], update_cols: list[str]):
        make = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        stmt = make(table).values(rows)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in update_cols}
        )

    # --- runs -----------------------------------------------------------------------------

    async def head(self, run_id: uuid.UUID) -> RunHead | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        runs.c.id,
                        runs.c.flow,
                        runs.c.flow_version,
                        runs.c.status,
                        runs.c.queue,
                        runs.c.priority,
                        runs.c.seq,
                        runs.c.current_node,
                        runs.c.lease_owner,
                        runs.c.lease_expires_at,
                    ).where(runs.c.id == run_id)
                )
            ).first()
        return RunHead(**row._mapping) if row else None

    async def mark_dispatched(self, run_id: uuid.UUID, at: datetime | None = None) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(runs).where(runs.c.id == run_id).values(dispatched_at=at or utcnow())
            )

    async def take_orphans(
        self, redispatch_after: float, *, everything: bool = False, limit: int = 1000
    ) -> list[Dispatch]:
        """Unfinished runs no live lease holds that need a (new) broker message.

        A run whose lease expired was claimed and then lost its holder: its message was
        consumed, so it needs a new one now. A run with no lease needs one when its last
        message is older than ``redispatch_after`` (it may still be waiting in the queue),
        or always with ``everything`` (the broker lost its queues). The expired lease is
        cleared and the dispatch time set in the same statement, so the next sweep does
        not send the run again."""
        now = utcnow()
        stale = now - timedelta(seconds=redispatch_after)
        expired = and_(runs.c.lease_owner.is_not(None), runs.c.lease_expires_at < now)
        unleased = runs.c.lease_owner.is_(None)
        if not everything:
            unleased = and_(
                unleased, func.coalesce(runs.c.dispatched_at, runs.c.created_at) < stale
            )
        pick = (
            select(runs.c.id)
            .where(runs.c.status.in_(CLAIMABLE), or_(expired, unleased))
            .order_by(runs.c.priority.desc(), runs.c.id)
            .limit(limit)
        )
        if self.db.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        async with self.db.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(runs.c.id.in_(pick.scalar_subquery()), runs.c.status.in_(CLAIMABLE))
                .values(dispatched_at=now, lease_owner=None, lease_expires_at=None)
                .returning(runs.c.id, runs.c.queue, runs.c.priority)
            )
            return [Dispatch(r.id, r.queue, r.priority) for r in result]

    # --- per-flow concurrency slots ---------------------------------------------------------

    async def acquire_slot(
        self, flow: str, run_id: uuid.UUID, owner: str, limit: int, ttl: float
    ) -> bool:
        """Take one of ``flow``'s ``limit`` slots for ``run_id`` (or renew the one it holds)."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        async with self.db.write() as conn:
            if self.db.dialect == "postgresql":
                await conn.execute(
                    select(func.pg_advisory_xact_lock(func.hashtext("pocketrun-slots:" + flow)))
                )
            await conn.execute(
                delete(flow_slots).where(flow_slots.c.flow == flow, flow_slots.c.expires_at < now)
            )
            mine = await conn.execute(
                update(flow_slots)
                .where(flow_slots.c.flow == flow, flow_slots.c.run_id == run_id)
                .values(owner=owner, expires_at=expires)
            )
            if mine.rowcount:
                return True
            held = (
                await conn.execute(
                    select(func.count()).select_from(flow_slots).where(flow_slots.c.flow == flow)
                )
            ).scalar_one()
            if held >= limit:
                return False
            await conn.execute(
                insert(flow_slots).values(flow=flow, run_id=run_id, owner=owner, expires_at=expires)
            )
            return True

    async def release_slot(self, flow: str, run_id: uuid.UUID, owner: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                delete(flow_slots).where(
                    flow_slots.c.flow == flow,
                    flow_slots.c.run_id == run_id,
                    flow_slots.c.owner == owner,
                )
            )

    async def renew_slots(self, owner: str, ttl: float) -> int:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(flow_slots)
                .where(flow_slots.c.owner == owner)
                .values(expires_at=utcnow() + timedelta(seconds=ttl))
            )
            return result.rowcount

    # --- worker heartbeats -----------------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        *,
        name: str,
        hostname: str,
        pid: int,
        queues: list[str],
        running: list[str],
        started_at: datetime,
        ttl: float,
    ) -> None:
        now = utcnow()
        row = {
            "id": worker_id,
            "name": name,
            "hostname": hostname,
            "pid": pid,
            "queues": queues,
            "running": running,
            "started_at": started_at,
            "heartbeat_at": now,
            "expires_at": now + timedelta(seconds=ttl),
        }
        stmt = self._upsert(
            workers, [row], ["id"], ["queues", "running", "heartbeat_at", "expires_at"]
        )
        async with self.db.write() as conn:
            await conn.execute(stmt)

    async def forget_worker(self, worker_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(workers).where(workers.c.id == worker_id))

    async def prune_workers(self, older_than: float = 3600.0) -> None:
        cutoff = utcnow() - timedelta(seconds=older_than)
        async with self.db.write() as conn:
            await conn.execute(delete(workers).where(workers.c.expires_at < cutoff))

    async def live_workers(self, *, include_dead: bool = False) -> list[LiveWorker]:
        query = select(workers).order_by(workers.c.name, workers.c.pid)
        if not include_dead:
            query = query.where(workers.c.expires_at >= utcnow())
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            LiveWorker(
                r["id"],
                r["name"],
                r["hostname"],
                r["pid"],
                list(r["queues"] or []),
                list(r["running"] or []),
                r["started_at"],
                r["heartbeat_at"],
                r["expires_at"],
            )
            for r in rows
        ]

    async def count_live_workers(self) -> tuple[int, int]:
        """(worker names, worker processes) with a heartbeat inside their TTL."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(func.count(func.distinct(workers.c.name)), func.count()).where(
                        workers.c.expires_at >= utcnow()
                    )
                )
            ).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    # --- named locks -----------------------------------------------------------------------

    async def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lock ``name``; False while another live holder has it."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        async with self.db.write() as conn:
            result = await conn.execute(
                update(locks)
                .where(locks.c.name == name, or_(locks.c.owner == owner, locks.c.expires_at < now))
                .values(owner=owner, expires_at=expires)
            )
            if result.rowcount:
                return True
            make = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
            inserted = await conn.execute(
                make(locks)
                .values(name=name, owner=owner, expires_at=expires)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            return bool(inserted.rowcount)

    async def unlock(self, name: str, owner: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))
