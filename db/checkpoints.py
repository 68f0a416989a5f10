"""The engine's side of the database: leases, checkpoints and the sweeper's queries.

Every checkpoint is one transaction: the fenced UPDATE of the run (step counter,
cursor, current node, lease renewal) and the INSERT of the step with its store delta.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from db.database import Database
from db.models import flows, runs, steps
from db.types import utcnow


class LeaseLost(Exception):
    """The run's lease or step counter moved on: this holder must stop without writing."""


@dataclass(slots=True)
class Claimed:
    id: uuid.UUID
    flow: str
    flow_version: str
    graph_hash: str
    status: str
    seq: int
    cursor: Any
    state: Any
    state_seq: int
    input: Any
    deliveries: int
    cancel_requested: bool
    deadline_at: datetime | None


@dataclass(slots=True)
class StepRecord:
    seq: int
    node: str
    status: str
    attempts: int
    action: str | None
    started_at: datetime
    finished_at: datetime
    worker: str
    error: dict | None
    delta: dict | None

    def values(self, run_id: uuid.UUID) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "seq": self.seq,
            "node": self.node,
            "status": self.status,
            "attempts": self.attempts,
            "action": self.action,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": (self.finished_at - self.started_at).total_seconds() * 1000,
            "worker": self.worker,
            "error": self.error,
            "delta": self.delta,
        }


CLAIMABLE = ("queued", "running")


class Checkpoints:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _fence(self, run_id: uuid.UUID, owner: str, seq: int):
        return and_(runs.c.id == run_id, runs.c.seq == seq, runs.c.lease_owner == owner)

    async def claim(self, run_id: uuid.UUID, owner: str, ttl: float) -> Claimed | None:
        """Take the run's lease if nobody live holds it; count the delivery."""
        now = utcnow()
        async with self.db.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.status.in_(CLAIMABLE),
                    or_(
                        runs.c.lease_owner.is_(None),
                        runs.c.lease_expires_at < now,
                        runs.c.lease_owner == owner,
                    ),
                )
                .values(
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=ttl),
                    deliveries=runs.c.deliveries + 1,
                )
                .returning(
                    runs.c.id,
                    runs.c.flow,
                    runs.c.flow_version,
                    runs.c.graph_hash,
                    runs.c.status,
                    runs.c.seq,
                    runs.c.cursor,
                    runs.c.state,
                    runs.c.state_seq,
                    runs.c.input,
                    runs.c.deliveries,
                    runs.c.cancel_requested,
                    runs.c.deadline_at,
                )
            )
            row = result.mappings().first()
        return Claimed(**row) if row else None

    async def mark_running(self, run_id: uuid.UUID, owner: str, seq: int, node: str | None) -> None:
        now = utcnow()
        async with self.db.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(self._fence(run_id, owner, seq), runs.c.status == "queued")
                .values(
                    status="running", started_at=now, current_node=node, version=runs.c.version + 1
                )
            )
            if result.rowcount == 0:
                check = await conn.execute(select(runs.c.id).where(self._fence(run_id, owner, seq)))
                if check.first() is None:
                    raise LeaseLost(str(run_id))

    async def deltas(self, run_id: uuid.UUID, after_seq: int) -> list[dict | None]:
        async with self.db.read() as conn:
            result = await conn.execute(
                select(steps.c.delta)
                .where(steps.c.run_id == run_id, steps.c.seq > after_seq)
                .order_by(steps.c.seq)
            )
            return [row.delta for row in result]

    async def commit(
        self,
        run_id: uuid.UUID,
        owner: str,
        seq: int,
        ttl: float,
        step: StepRecord | None,
        run_values: dict[str, Any],
    ) -> bool:
        """Commit one checkpoint fenced by ``seq``; return whether cancel was requested."""
        values = {
            "lease_expires_at": utcnow() + timedelta(seconds=ttl),
            **run_values,
            "seq": step.seq if step is not None else seq,
            "version": runs.c.version + 1,
        }
        async with self.db.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(self._fence(run_id, owner, seq))
                .values(values)
                .returning(runs.c.cancel_requested)
            )
            row = result.first()
            if row is None:
                raise LeaseLost(str(run_id))
            if step is not None:
                await conn.execute(insert(steps).values(step.values(run_id)))
        return bool(row.cancel_requested)

    async def release(self, run_id: uuid.UUID, owner: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def renew(self, owner: str, ttl: float, run_ids: list[uuid.UUID]) -> int:
        """Extend the leases of the runs this holder is advancing right now."""
        if not run_ids:
            return 0
        async with self.db.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(
                    runs.c.lease_owner == owner,
                    runs.c.id.in_(run_ids),
                    runs.c.status.in_(CLAIMABLE),
                )
                .values(lease_expires_at=utcnow() + timedelta(seconds=ttl))
            )
            return result.rowcount

    async def orphans(self, limit: int = 500) -> list[tuple[uuid.UUID, int]]:
        """Unfinished runs no live lease holds, highest priority then oldest first."""
        now = utcnow()
        async with self.db.read() as conn:
            result = await conn.execute(
                select(runs.c.id, runs.c.priority)
                .where(
                    runs.c.status.in_(CLAIMABLE),
                    or_(runs.c.lease_owner.is_(None), runs.c.lease_expires_at < now),
                )
                .order_by(runs.c.priority.desc(), runs.c.id)
                .limit(limit)
            )
            return [(row.id, row.priority) for row in result]

    async def sync_flows(self, specs: list[tuple[str, str, str, str]]) -> None:
        """Record (name, version, graph hash, description) of every loaded flow."""
        if not specs:
            return
        now = utcnow()
        rows = [
            {"name": n, "version": v, "graph_hash": h, "description": d, "registered_at": now}
            for n, v, h, d in specs
        ]
        make = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        stmt = make(flows).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name", "version"],
            set_={"graph_hash": stmt.excluded.graph_hash, "description": stmt.excluded.description},
        )
        async with self.db.write() as conn:
            await conn.execute(stmt)
