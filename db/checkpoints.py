"""The engine's side of the database: leases, checkpoints and the sweeper's queries.

Every checkpoint is one transaction: the fenced UPDATE of the run (step counter,
cursor, current node, lease renewal) and the INSERT of the step with its store delta.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
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
    cursor: Any = None  # the cursor after the step (None on a run's last or failed step)
    next_node: str | None = None

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
            "cursor": self.cursor,
            "next_node": self.next_node,
        }


CLAIMABLE = ("queued", "running")
_INSERT_STEP = insert(steps)


# The engine's statements are built once and executed with parameters: building and
# cache-keying a fresh expression per step cost about as much as a statement's round trip.
def _bind(name: str, column) -> Any:
    return bindparam(name, type_=column.type)


_BOUND_FENCE = and_(
    runs.c.id == _bind("f_id", runs.c.id),
    runs.c.seq == _bind("f_seq", runs.c.seq),
    runs.c.lease_owner == _bind("f_owner", runs.c.lease_owner),
)
_CLAIM = (
    update(runs)
    .where(
        runs.c.id == _bind("c_id", runs.c.id),
        runs.c.status.in_(CLAIMABLE),
        or_(
            runs.c.lease_owner.is_(None),
            runs.c.lease_expires_at < _bind("c_now", runs.c.lease_expires_at),
            runs.c.lease_owner == _bind("c_owner", runs.c.lease_owner),
        ),
    )
    .values(
        lease_owner=_bind("c_owner", runs.c.lease_owner),
        lease_expires_at=_bind("c_expires", runs.c.lease_expires_at),
        deliveries=runs.c.deliveries + 1,
        status="running",
        started_at=func.coalesce(runs.c.started_at, _bind("c_now", runs.c.started_at)),
        version=runs.c.version + 1,
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


@lru_cache(maxsize=128)
def _commit_update(keys: tuple[str, ...], *, quiet: bool = False):
    """The fenced checkpoint UPDATE setting ``keys``; ``quiet``: only if no cancel is
    pending, and without RETURNING."""
    stmt = (
        update(runs)
        .where(_BOUND_FENCE)
        .values(
            {
                **{key: _bind(f"v_{key}", runs.c[key]) for key in keys},
                "version": runs.c.version + 1,
            }
        )
    )
    if quiet:
        return stmt.where(runs.c.cancel_requested.is_(False))
    return stmt.returning(runs.c.cancel_requested)


@lru_cache(maxsize=64)
def _commit_with_step(keys: tuple[str, ...]):
    """PostgreSQL: the fenced UPDATE and the step's INSERT as one statement (data-modifying
    CTEs); no row back means the fence failed and nothing was written."""
    checkpoint = _commit_update(keys).cte("checkpoint")
    columns = [column.name for column in steps.c]
    step = insert(steps).from_select(
        columns, select(*(_bind(f"s_{c}", steps.c[c]) for c in columns)).select_from(checkpoint)
    )
    return select(checkpoint.c.cancel_requested).add_cte(step.cte("step"))


_STEP_COLUMNS = [column.name for column in steps.c]
# SQLite: the whole common checkpoint as one statement. The step is inserted only if the
# fence holds and no cancel is pending; the steps_checkpoint trigger (migration 0004)
# then moves the run's seq, cursor and current node.
_SQLITE_CHECKPOINT = insert(steps).from_select(
    _STEP_COLUMNS,
    select(*(_bind(f"s_{c}", steps.c[c]) for c in _STEP_COLUMNS)).where(
        _BOUND_FENCE, runs.c.cancel_requested.is_(False)
    ),
)


class Checkpoints:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, run_id: uuid.UUID, owner: str, ttl: float) -> Claimed | None:
        """Take the run's lease if nobody live holds it; count the delivery."""
        now = utcnow()
        params = {
            "c_id": run_id,
            "c_now": now,
            "c_owner": owner,
            "c_expires": now + timedelta(seconds=ttl),
        }
        async with self.db.write_statement() as conn:
            result = await conn.execute(_CLAIM, params)
            row = result.mappings().first()
        return Claimed(**row) if row else None

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
        """Commit one checkpoint fenced by ``seq``; return whether cancel was requested.

        With a step whose ``cursor`` is set and ``run_values`` holding nothing but that
        cursor's own columns, SQLite takes the one-statement path; anything else (a
        snapshot, the run's end, a pending cancel) takes the general one."""
        if (
            self.db.dialect == "sqlite"
            and step is not None
            and step.cursor is not None
            and run_values.keys() <= {"cursor", "current_node"}
        ):
            params = {f"s_{key}": value for key, value in step.values(run_id).items()}
            params.update(f_id=run_id, f_seq=seq, f_owner=owner)
            async with self.db.write() as conn:
                if (await conn.execute(_SQLITE_CHECKPOINT, params)).rowcount == 1:
                    return False
            # fence failed or a cancel is pending: the general path tells which (the
            # trigger then re-applies the values its UPDATE already set)
        values = {
            "lease_expires_at": utcnow() + timedelta(seconds=ttl),
            # deliveries counts claims since the last checkpoint (runs that keep dying
            # mid-step), not hand-offs: a run may be taken over at every checkpoint
            "deliveries": 0,
            **run_values,
            "seq": step.seq if step is not None else seq,
        }
        params = {f"v_{key}": value for key, value in values.items()}
        params.update(f_id=run_id, f_seq=seq, f_owner=owner)
        async with self.db.write() as conn:
            if step is not None and self.db.dialect == "postgresql":
                # One statement, one round trip: the step is inserted only if the fence held.
                params.update({f"s_{key}": value for key, value in step.values(run_id).items()})
                row = (await conn.execute(_commit_with_step(tuple(values)), params)).first()
                if row is None:
                    raise LeaseLost(str(run_id))
                return bool(row.cancel_requested)
            # SQLite: no RETURNING in the common case (a row back costs a driver round trip);
            # no row updated means the fence failed or a cancel is pending: ask which.
            result = await conn.execute(_commit_update(tuple(values), quiet=True), params)
            cancel = False
            if result.rowcount != 1:
                row = (await conn.execute(_commit_update(tuple(values)), params)).first()
                if row is None:
                    raise LeaseLost(str(run_id))
                cancel = bool(row.cancel_requested)
            if step is not None:
                await conn.execute(_INSERT_STEP, step.values(run_id))
        return cancel

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
