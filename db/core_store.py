"""What both stores share: the cold paths, in SQLAlchemy Core, on the database's clock.

Lists, steps, cancel, the sweeper's and the dispatcher's queries, slots, the worker registry
and named locks run a few times a second at most, so they stay as SQLAlchemy expressions
that compile for either database. A subclass supplies only what differs: the database's
clock (``_now``, ``_later``), upserts, row locks for the sweeper, and a lock that
serializes slot takers. The hot paths (create, get, claim, checkpoint) are the subclasses'
own, on the raw driver.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from core.errors import InvalidInput
from core.ids import uuid7, uuid7_bound
from core.jsonutil import roundtrip
from db.database import Database
from db.models import (
    HELD,
    IN_FLIGHT,
    flow_slots,
    flows,
    idempotency_keys,
    locks,
    node_cache,
    runs,
    steps,
    tenant_limits,
    workers,
)
from db.store import (
    CLAIMABLE,
    STOPPED,
    TERMINAL,
    Dispatch,
    ExtraRows,
    Idempotency,
    LiveWorker,
    NewRun,
    RunFilter,
    RunHead,
    RunStore,
)
from db.types import utcnow

# Columns the API shows; the checkpoint columns stay inside the engine.
RUN_COLUMNS = [
    runs.c.id,
    runs.c.tenant,
    runs.c.principal,
    runs.c.flow,
    runs.c.flow_version,
    runs.c.status,
    runs.c.mode,
    runs.c.priority,
    runs.c.queue,
    runs.c.created_at,
    runs.c.started_at,
    runs.c.finished_at,
    runs.c.current_node,
    runs.c.input,
    runs.c.output,
    runs.c.error,
    runs.c.metadata,
    runs.c.seq,
    runs.c.version,
    runs.c.cancel_requested,
    runs.c.pause_requested,
    runs.c.waiting_for,
    runs.c.wake_at,
    runs.c.trigger,
    runs.c.parent_run_id,
    runs.c.parent_seq,
    runs.c.retries,
    runs.c.held,
]
RUN_COLUMN_NAMES = [c.name for c in RUN_COLUMNS]
STEP_COLUMNS = [
    steps.c.seq,
    steps.c.node,
    steps.c.status,
    steps.c.attempts,
    steps.c.action,
    steps.c.started_at,
    steps.c.finished_at,
    steps.c.duration_ms,
    steps.c.worker,
    steps.c.error,
    steps.c.output,
    steps.c.cached,
]

# The statuses written out, not bound: SQLite uses a partial index (ix_runs_unfinished) only
# when the query's own text implies the index's WHERE, and a bound IN list never does.
_UNFINISHED = runs.c.status.in_([literal_column(repr(status)) for status in CLAIMABLE])

# Spelled as the partial indexes of migration 0012 are, so that SQLite uses them.
_IN_FLIGHT = text(IN_FLIGHT)
_HELD = text(HELD)


_MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def _id_bound(moment: datetime, *, upper: bool = False) -> uuid.UUID:
    """``uuid7_bound`` for any moment: UUIDv7 time starts at the epoch (48-bit milliseconds)."""
    return uuid7_bound(min(max(moment, _MIN_TIME), _MAX_TIME), upper=upper)


class CoreStore(RunStore):
    def __init__(self, sa: Database) -> None:
        self.sa = sa
        self.dialect = sa.dialect

    # --- what a subclass supplies ---------------------------------------------------------

    def _now(self) -> ColumnElement:
        """The database's clock, as SQL."""
        raise NotImplementedError

    def _later(self, seconds: float) -> ColumnElement:
        """The database's clock plus ``seconds``, as SQL."""
        raise NotImplementedError

    def _upsert(self, table: Any, rows: list[dict[str, Any]], keys: list[str], cols: list[str]):
        raise NotImplementedError

    def _insert_ignore(self, table: Any, values: dict[str, Any], keys: list[str]):
        raise NotImplementedError

    def _for_update(self, query: Select) -> Select:
        """Row locks the sweeper takes so that two sweepers never pick the same run."""
        return query

    _in_flight_from = "runs"  # SQLite names the partial index its planner would not pick

    def _in_flight_count(self, tenant: str) -> Select:
        where = text(f"tenant = :tenant AND {IN_FLIGHT}").bindparams(tenant=tenant)
        return select(func.count()).select_from(text(self._in_flight_from)).where(where)

    async def serialize(self, conn: AsyncConnection, name: str) -> None:
        """Within ``conn``'s transaction, wait for others serialized on ``name``."""

    # --- runs -----------------------------------------------------------------------------

    async def create(
        self,
        new: NewRun,
        idempotency: Idempotency | None = None,
        *,
        extra_rows: ExtraRows | None = None,
    ) -> tuple[Mapping[str, Any], bool]:
        if idempotency is not None:
            existing = await self._replay(new, idempotency)
            if existing is not None:
                return existing, False
        now = utcnow()
        run_id = uuid7(int(now.timestamp() * 1000))
        extras = self._key_rows(new, idempotency, run_id, now)
        if extra_rows is not None:
            extras.extend(extra_rows(run_id))
        try:
            deadline, held = await self._insert_run(new, run_id, now, extras)
        except IntegrityError:
            if idempotency is None:
                raise
            existing = await self._replay(new, idempotency)  # a concurrent twin won
            if existing is None:
                raise
            return existing, False
        row = self._new_row(new, run_id, now)
        row["deadline_at"] = deadline
        row["held"] = held
        return row, True

    async def _insert_run(
        self, new: NewRun, run_id: uuid.UUID, now: datetime, extras: list[tuple[Any, dict]]
    ) -> tuple[datetime | None, bool]:
        """Insert the queued run and ``extras`` in one transaction; return its deadline and
        whether it is held (its tenant at ``new.tenant_limit``). Raises SQLAlchemy's
        ``IntegrityError`` on a duplicate key."""
        raise NotImplementedError

    @staticmethod
    def _key_rows(
        new: NewRun, idem: Idempotency | None, run_id: uuid.UUID, now: datetime
    ) -> list[tuple[Any, dict[str, Any]]]:
        if idem is None:
            return []
        row = {
            "tenant": new.tenant,
            "principal": new.principal,
            "flow": new.flow,
            "key": idem.key,
            "request_hash": idem.request_hash,
            "run_id": run_id,
            "created_at": now,
        }
        return [(idempotency_keys, row)]

    @staticmethod
    def _new_row(new: NewRun, run_id: uuid.UUID, now: datetime) -> dict[str, Any]:
        """The row of a run just created, as ``get`` returns it (no re-read)."""
        return {
            "id": run_id,
            "tenant": new.tenant,
            "principal": new.principal,
            "flow": new.flow,
            "flow_version": new.flow_version,
            "status": "queued",
            "mode": new.mode,
            "priority": new.priority,
            "queue": new.queue,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "current_node": new.current_node,
            "input": roundtrip(new.input),
            "output": None,
            "error": None,
            "metadata": roundtrip(new.metadata),
            "seq": 0,
            "version": 0,
            "cancel_requested": False,
            "pause_requested": False,
            "waiting_for": None,
            "wake_at": None,
            "trigger": new.trigger,
            "parent_run_id": new.parent[0] if new.parent else None,
            "parent_seq": new.parent[1] if new.parent else None,
            "retries": 0,
            "held": False,
        }

    async def _replay(self, new: NewRun, idem: Idempotency) -> Mapping[str, Any] | None:
        """The run an Idempotency-Key already names (None: the key is free or expired);
        422 when the key was used with another body."""
        key_match = and_(
            idempotency_keys.c.tenant == new.tenant,
            idempotency_keys.c.principal == new.principal,
            idempotency_keys.c.flow == new.flow,
            idempotency_keys.c.key == idem.key,
        )
        async with self.sa.read() as conn:
            found = (
                await conn.execute(
                    select(
                        idempotency_keys.c.request_hash,
                        idempotency_keys.c.run_id,
                        (idempotency_keys.c.created_at < self._later(-idem.ttl)).label("old"),
                    ).where(key_match)
                )
            ).first()
        if found is None:
            return None
        if found.old:
            async with self.sa.write() as conn:
                await conn.execute(
                    delete(idempotency_keys).where(
                        key_match, idempotency_keys.c.created_at < self._later(-idem.ttl)
                    )
                )
            return None
        if found.request_hash != idem.request_hash:
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body",
                errors=[
                    {
                        "loc": ["header", "idempotency-key"],
                        "path": "header.idempotency-key",
                        "msg": "reused with another body",
                        "type": "idempotency_mismatch",
                    }
                ],
            )
        return await self.get(found.run_id)

    async def _get_pooled(
        self, run_id: uuid.UUID, tenant: str | None = None, principal: str | None = None
    ) -> Mapping[str, Any] | None:
        query = select(*RUN_COLUMNS).where(runs.c.id == run_id)
        if tenant is not None:
            query = query.where(runs.c.tenant == tenant)
        if principal is not None:
            query = query.where(runs.c.principal == principal)
        async with self.sa.read() as conn:
            return (await conn.execute(query)).mappings().first()

    async def _version_pooled(self, run_id: uuid.UUID) -> tuple[int, str] | None:
        async with self.sa.read() as conn:
            row = (
                await conn.execute(select(runs.c.version, runs.c.status).where(runs.c.id == run_id))
            ).first()
        return (row.version, row.status) if row else None

    async def list(self, f: RunFilter) -> list[Mapping[str, Any]]:
        query = select(*RUN_COLUMNS)
        if f.tenant is not None:
            query = query.where(runs.c.tenant == f.tenant)
        if f.principal is not None:
            query = query.where(runs.c.principal == f.principal)
        if f.flow:
            query = query.where(runs.c.flow == f.flow)
        if f.statuses:
            query = query.where(runs.c.status.in_(list(f.statuses)))
        if f.created_after is not None:
            query = query.where(
                runs.c.id >= _id_bound(f.created_after), runs.c.created_at >= f.created_after
            )
        if f.created_before is not None:
            query = query.where(
                runs.c.id <= _id_bound(f.created_before, upper=True),
                runs.c.created_at < f.created_before,
            )
        if f.before_id is not None:
            query = query.where(runs.c.id < f.before_id)
        query = query.order_by(runs.c.id.desc()).limit(f.limit)
        async with self.sa.read() as conn:
            return list((await conn.execute(query)).mappings().all())

    async def steps(
        self, run_id: uuid.UUID, *, after: int = 0, limit: int | None = None, delta: bool = False
    ) -> list[Mapping[str, Any]]:
        columns = [*STEP_COLUMNS, steps.c.delta] if delta else STEP_COLUMNS
        query = (
            select(*columns)
            .where(steps.c.run_id == run_id, steps.c.seq > after)
            .order_by(steps.c.seq)
            .limit(limit)
        )
        async with self.sa.read() as conn:
            return list((await conn.execute(query)).mappings().all())

    async def count_unfinished(self, tenant: str) -> int:
        query = select(func.count()).where(runs.c.tenant == tenant, runs.c.status.in_(CLAIMABLE))
        async with self.sa.read() as conn:
            return (await conn.execute(query)).scalar_one()

    async def deltas(
        self, run_id: uuid.UUID, after_seq: int, up_to: int | None = None
    ) -> list[dict | None]:
        query = select(steps.c.delta).where(steps.c.run_id == run_id, steps.c.seq > after_seq)
        if up_to is not None:
            query = query.where(steps.c.seq <= up_to)
        async with self.sa.read() as conn:
            result = await conn.execute(query.order_by(steps.c.seq))
            return [row.delta for row in result]

    async def snapshot(self, run_id: uuid.UUID) -> tuple[Any, int] | None:
        query = select(runs.c.state, runs.c.state_seq).where(runs.c.id == run_id)
        async with self.sa.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row.state, row.state_seq)

    async def cancel(self, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        async with self.sa.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_(("queued", *STOPPED)))
                .values(
                    status="cancelled",
                    finished_at=self._now(),
                    cancel_requested=True,
                    lease_owner=None,
                    lease_expires_at=None,
                    wake_at=None,
                    version=runs.c.version + 1,
                    error={
                        "type": "cancelled",
                        "message": "cancelled before it ran on",
                        "node": None,
                    },
                )
            )
            await self._flag(conn, run_id, runs.c.cancel_requested)
            return await self._row(conn, run_id)

    async def pause(self, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        async with self.sa.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "queued")
                .values(
                    status="paused",
                    lease_owner=None,
                    lease_expires_at=None,
                    version=runs.c.version + 1,
                )
            )
            await self._flag(conn, run_id, runs.c.pause_requested)
            return await self._row(conn, run_id)

    async def unpause(self, run_id: uuid.UUID, *, dispatched: bool) -> Mapping[str, Any] | None:
        async with self.sa.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "paused")
                .values(
                    status="queued",
                    pause_requested=False,
                    dispatched_at=self._dispatched(dispatched),
                    version=runs.c.version + 1,
                )
            )
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "running", runs.c.pause_requested)
                .values(pause_requested=False, version=runs.c.version + 1)
            )
            return await self._row(conn, run_id)

    async def _flag(self, conn: AsyncConnection, run_id: uuid.UUID, flag: Any) -> None:
        """Ask the running run to stop at its next checkpoint (``flag`` is the ask)."""
        await conn.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.status == "running", flag.is_(False))
            .values({flag.name: True, "version": runs.c.version + 1})
        )

    @staticmethod
    async def _row(conn: AsyncConnection, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        """The run as this transaction left it."""
        found = await conn.execute(select(*RUN_COLUMNS).where(runs.c.id == run_id))
        row = found.mappings().first()
        return dict(row) if row is not None else None

    def _dispatched(self, now: bool) -> Any:
        """``dispatched_at`` for a run queued again: now (an executor has it), or long ago
        (the next sweep sends it)."""
        return self._now() if now else _MIN_TIME

    async def checkpoint_of(self, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        query = select(
            runs.c.status,
            runs.c.version,
            runs.c.seq,
            runs.c.cursor,
            runs.c.state,
            runs.c.state_seq,
            runs.c.input,
            runs.c.deadline_at,
            runs.c.created_at,
            runs.c.error,
            runs.c.retries,
            runs.c.graph_hash,
            runs.c.flow,
            runs.c.flow_version,
        ).where(runs.c.id == run_id)
        async with self.sa.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row is not None else None

    async def transition(
        self,
        run_id: uuid.UUID,
        statuses: Sequence[str],
        values: Mapping[str, Any],
        *,
        version: int | None = None,
        dispatched: bool | None = None,
    ) -> Mapping[str, Any] | None:
        query = update(runs).where(runs.c.id == run_id, runs.c.status.in_(list(statuses)))
        if version is not None:
            query = query.where(runs.c.version == version)
        changes = {**values, "version": runs.c.version + 1}
        if dispatched is not None:
            changes["dispatched_at"] = self._dispatched(dispatched)
        async with self.sa.write() as conn:
            result = await conn.execute(query.values(changes))
            if not result.rowcount:
                return None
            return await self._row(conn, run_id)

    async def step_cursor(self, run_id: uuid.UUID, before_seq: int) -> tuple[int, Any]:
        query = (
            select(steps.c.seq, steps.c.cursor)
            .where(
                steps.c.run_id == run_id, steps.c.seq < before_seq, steps.c.status == "succeeded"
            )
            .order_by(steps.c.seq.desc())
            .limit(1)
        )
        async with self.sa.read() as conn:
            row = (await conn.execute(query)).first()
        return (0, None) if row is None else (row.seq, row.cursor)

    async def due_timers(self, limit: int = 1000) -> tuple[list[Dispatch], list[uuid.UUID]]:
        due = and_(runs.c.wake_at.is_not(None), runs.c.wake_at <= self._now())
        sleeping = self._for_update(
            select(runs.c.id).where(runs.c.status == "sleeping", due).limit(limit)
        )
        waiting = self._for_update(
            select(runs.c.id).where(runs.c.status == "waiting", due).limit(limit)
        )
        async with self.sa.write() as conn:
            woken = await conn.execute(
                update(runs)
                .where(runs.c.id.in_(sleeping.scalar_subquery()), runs.c.status == "sleeping")
                .values(
                    status="queued",
                    wake_at=None,
                    dispatched_at=self._now(),
                    version=runs.c.version + 1,
                )
                .returning(runs.c.id, runs.c.queue, runs.c.priority, runs.c.tenant)
            )
            found = [Dispatch(r.id, r.queue, r.priority, r.tenant) for r in woken]
            expired = await conn.execute(
                update(runs)
                .where(runs.c.id.in_(waiting.scalar_subquery()), runs.c.status == "waiting")
                .values(
                    status="timed_out",
                    finished_at=self._now(),
                    wake_at=None,
                    version=runs.c.version + 1,
                    error={
                        "type": "wait_timeout",
                        "message": "no answer came within the wait's timeout",
                        "node": None,
                    },
                )
                .returning(runs.c.id)
            )
            ended = [r.id for r in expired]
        found.sort(key=lambda d: (-d.priority, d.id))
        return found, ended

    # --- leases ---------------------------------------------------------------------------

    async def release(self, run_id: uuid.UUID, owner: str) -> None:
        async with self.sa.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def leave(self, run_id: uuid.UUID, owner: str) -> None:
        # Queued again, unleased, its claim not counted as a delivery, and stamped as just
        # dispatched: the sweeper offers it again after REDISPATCH_AFTER, not at once.
        async with self.sa.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.lease_owner == owner)
                .values(
                    status="queued",
                    lease_owner=None,
                    lease_expires_at=None,
                    deliveries=case((runs.c.deliveries > 0, runs.c.deliveries - 1), else_=0),
                    dispatched_at=self._now(),
                    version=runs.c.version + 1,
                )
            )

    async def renew(self, owner: str, ttl: float, run_ids: Collection[uuid.UUID]) -> int:
        if not run_ids:
            return 0
        async with self.sa.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(
                    runs.c.lease_owner == owner,
                    runs.c.id.in_(list(run_ids)),
                    runs.c.status.in_(CLAIMABLE),
                )
                .values(lease_expires_at=self._later(ttl))
            )
            return result.rowcount

    # --- dispatch and the sweeper ---------------------------------------------------------

    async def head(self, run_id: uuid.UUID) -> RunHead | None:
        live = and_(runs.c.lease_owner.is_not(None), runs.c.lease_expires_at > self._now())
        async with self.sa.read() as conn:
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
                        live.label("live"),
                        runs.c.tenant,
                    ).where(runs.c.id == run_id)
                )
            ).first()
        if row is None:
            return None
        m = row._mapping
        return RunHead(
            m["id"],
            m["flow"],
            m["flow_version"],
            m["status"],
            m["queue"],
            m["priority"],
            m["seq"],
            m["current_node"],
            m["lease_owner"] if m["live"] else None,
            m["tenant"],
        )

    async def mark_dispatched(self, run_id: uuid.UUID) -> None:
        async with self.sa.write() as conn:
            await conn.execute(
                update(runs).where(runs.c.id == run_id).values(dispatched_at=self._now())
            )

    async def admit_held(self, tenant: str, default_limit: int) -> list[Dispatch]:
        waiting = select(runs.c.id).where(runs.c.tenant == tenant, _HELD).limit(1)
        async with self.sa.read() as conn:
            if (await conn.execute(waiting)).first() is None:
                return []  # the usual case, answered without a write
        async with self.sa.write() as conn:
            await self.serialize(conn, f"tenant:{tenant}")
            limit = await self._limit_of(conn, tenant, default_limit)
            in_flight = self._in_flight_count(tenant)
            room = limit - (await conn.execute(in_flight)).scalar_one()
            if room <= 0:
                return []
            pick = self._for_update(
                select(runs.c.id)
                .where(runs.c.tenant == tenant, _HELD)
                .order_by(runs.c.priority.desc(), runs.c.id)
                .limit(room)
            )
            # picked first, then updated by id: as a LIMIT subquery of the UPDATE,
            # PostgreSQL may evaluate the pick once per row it scans
            picked = [row.id for row in await conn.execute(pick)]
            if not picked:
                return []
            result = await conn.execute(
                update(runs)
                .where(runs.c.id.in_(picked), _HELD)
                .values(held=False, dispatched_at=self._now())
                .returning(runs.c.id, runs.c.queue, runs.c.priority, runs.c.tenant)
            )
            found = [Dispatch(r.id, r.queue, r.priority, r.tenant) for r in result]
        found.sort(key=lambda d: (-d.priority, d.id))
        return found

    async def held_tenants(self) -> list[str]:
        async with self.sa.read() as conn:
            rows = await conn.execute(select(runs.c.tenant).where(_HELD).distinct())
            return [r.tenant for r in rows]

    async def tenant_limit(self, tenant: str) -> Mapping[str, Any] | None:
        query = select(
            tenant_limits.c.concurrency, tenant_limits.c.updated_at, tenant_limits.c.updated_by
        ).where(tenant_limits.c.tenant == tenant)
        async with self.sa.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row is not None else None

    async def set_tenant_limit(self, tenant: str, concurrency: int | None, by: str) -> None:
        async with self.sa.write() as conn:
            await self.serialize(conn, f"tenant:{tenant}")
            await conn.execute(delete(tenant_limits).where(tenant_limits.c.tenant == tenant))
            if concurrency is not None:
                await conn.execute(
                    insert(tenant_limits).values(
                        tenant=tenant, concurrency=concurrency, updated_at=utcnow(), updated_by=by
                    )
                )

    async def tenant_load(self, tenant: str) -> tuple[int, int]:
        held_count = select(func.count()).select_from(runs).where(runs.c.tenant == tenant, _HELD)
        async with self.sa.read() as conn:
            in_flight = (await conn.execute(self._in_flight_count(tenant))).scalar_one()
            held = (await conn.execute(held_count)).scalar_one()
        return in_flight, held

    @staticmethod
    async def _limit_of(conn: AsyncConnection, tenant: str, default_limit: int) -> int:
        override = select(tenant_limits.c.concurrency).where(tenant_limits.c.tenant == tenant)
        found = (await conn.execute(override)).scalar_one_or_none()
        return default_limit if found is None else found

    async def cache_get(self, tenant: str, flow: str, node: str, key: str) -> tuple[bool, Any]:
        c = node_cache.c
        query = select(c.value).where(
            c.tenant == tenant,
            c.flow == flow,
            c.node == node,
            c.key == key,
            c.expires_at > utcnow(),
        )
        async with self.sa.read() as conn:
            row = (await conn.execute(query)).first()
        return (True, row.value) if row is not None else (False, None)

    async def cache_put(
        self, tenant: str, flow: str, node: str, key: str, value: Any, ttl: float
    ) -> None:
        row = {
            "tenant": tenant,
            "flow": flow,
            "node": node,
            "key": key,
            "value": value,
            "expires_at": utcnow() + timedelta(seconds=ttl),
        }
        keys = ["tenant", "flow", "node", "key"]
        async with self.sa.write() as conn:
            await conn.execute(self._upsert(node_cache, [row], keys, ["value", "expires_at"]))

    async def cache_clear(self, tenant: str, flow: str, key: str | None = None) -> int:
        c = node_cache.c
        where = [c.tenant == tenant, c.flow == flow]
        if key is not None:
            where.append(c.key == key)
        async with self.sa.write() as conn:
            result = await conn.execute(delete(node_cache).where(*where))
        return result.rowcount

    async def take_orphans(
        self, redispatch_after: float, *, everything: bool = False, limit: int = 1000
    ) -> list[Dispatch]:
        # An expired lease: the run's message was consumed and its holder died, so it needs
        # a new one now. No lease: its message may still be queued, unless it is older than
        # ``redispatch_after`` (or the broker lost its queues: ``everything``). Clearing the
        # lease and stamping the dispatch in the same statement keeps the next sweep off it.
        expired = and_(runs.c.lease_owner.is_not(None), runs.c.lease_expires_at < self._now())
        unleased = runs.c.lease_owner.is_(None)
        if not everything:
            unleased = and_(
                unleased,
                func.coalesce(runs.c.dispatched_at, runs.c.created_at)
                < self._later(-redispatch_after),
            )
        pick = self._for_update(
            select(runs.c.id)
            .where(_UNFINISHED, literal_column("NOT held"), or_(expired, unleased))
            .order_by(runs.c.priority.desc(), runs.c.id)
            .limit(limit)
        )
        async with self.sa.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(runs.c.id.in_(pick.scalar_subquery()), _UNFINISHED)
                .values(dispatched_at=self._now(), lease_owner=None, lease_expires_at=None)
                .returning(runs.c.id, runs.c.queue, runs.c.priority, runs.c.tenant)
            )
            found = [Dispatch(r.id, r.queue, r.priority, r.tenant) for r in result]
        found.sort(key=lambda d: (-d.priority, d.id))
        return found

    # --- per-flow concurrency slots -------------------------------------------------------

    async def acquire_slot(
        self, flow: str, run_id: uuid.UUID, owner: str, limit: int, ttl: float
    ) -> bool:
        async with self.sa.write() as conn:
            await self.serialize(conn, "pocketrun-slots:" + flow)
            await conn.execute(
                delete(flow_slots).where(
                    flow_slots.c.flow == flow, flow_slots.c.expires_at < self._now()
                )
            )
            mine = await conn.execute(
                update(flow_slots)
                .where(flow_slots.c.flow == flow, flow_slots.c.run_id == run_id)
                .values(owner=owner, expires_at=self._later(ttl))
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
                insert(flow_slots).values(
                    flow=flow, run_id=run_id, owner=owner, expires_at=self._later(ttl)
                )
            )
            return True

    async def release_slot(self, flow: str, run_id: uuid.UUID, owner: str) -> None:
        async with self.sa.write() as conn:
            await conn.execute(
                delete(flow_slots).where(
                    flow_slots.c.flow == flow,
                    flow_slots.c.run_id == run_id,
                    flow_slots.c.owner == owner,
                )
            )

    async def renew_slots(self, owner: str, ttl: float, run_ids: Collection[uuid.UUID]) -> int:
        if not run_ids:
            return 0
        async with self.sa.write() as conn:
            result = await conn.execute(
                update(flow_slots)
                .where(flow_slots.c.owner == owner, flow_slots.c.run_id.in_(list(run_ids)))
                .values(expires_at=self._later(ttl))
            )
            return result.rowcount

    # --- the worker registry --------------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        *,
        name: str,
        hostname: str,
        pid: int,
        queues: list[str],
        running: list[str],
        ttl: float,
    ) -> None:
        row = {
            "id": worker_id,
            "name": name,
            "hostname": hostname,
            "pid": pid,
            "queues": queues,
            "running": running,
            "started_at": self._now(),
            "heartbeat_at": self._now(),
            "expires_at": self._later(ttl),
        }
        stmt = self._upsert(
            workers, [row], ["id"], ["queues", "running", "heartbeat_at", "expires_at"]
        )
        async with self.sa.write() as conn:
            await conn.execute(stmt)

    async def forget_worker(self, worker_id: str) -> None:
        async with self.sa.write() as conn:
            await conn.execute(delete(workers).where(workers.c.id == worker_id))

    async def prune_workers(self, older_than: float = 3600.0) -> None:
        async with self.sa.write() as conn:
            await conn.execute(
                delete(workers).where(workers.c.expires_at < self._later(-older_than))
            )

    async def live_workers(self, *, include_dead: bool = False) -> list[LiveWorker]:
        alive = (workers.c.expires_at >= self._now()).label("alive")
        query = select(workers, alive).order_by(workers.c.name, workers.c.pid)
        if not include_dead:
            query = query.where(workers.c.expires_at >= self._now())
        async with self.sa.read() as conn:
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
                bool(r["alive"]),
            )
            for r in rows
        ]

    async def count_live_workers(self) -> tuple[int, int]:
        async with self.sa.read() as conn:
            row = (
                await conn.execute(
                    select(func.count(func.distinct(workers.c.name)), func.count()).where(
                        workers.c.expires_at >= self._now()
                    )
                )
            ).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    # --- named locks ----------------------------------------------------------------------

    async def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        async with self.sa.write() as conn:
            result = await conn.execute(
                update(locks)
                .where(
                    locks.c.name == name,
                    or_(locks.c.owner == owner, locks.c.expires_at < self._now()),
                )
                .values(owner=owner, expires_at=self._later(ttl))
            )
            if result.rowcount:
                return True
            inserted = await conn.execute(
                self._insert_ignore(
                    locks, {"name": name, "owner": owner, "expires_at": self._later(ttl)}, ["name"]
                )
            )
            return bool(inserted.rowcount)

    async def unlock(self, name: str, owner: str) -> None:
        async with self.sa.write() as conn:
            await conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))

    # --- retention ------------------------------------------------------------------------

    def _expired(self, older_than: float) -> ColumnElement:
        return and_(
            runs.c.status.in_(TERMINAL),
            runs.c.finished_at.is_not(None),
            runs.c.finished_at < self._later(-older_than),
        )

    async def expired_runs(self, older_than: float, limit: int) -> list[tuple[uuid.UUID, int]]:
        query = (
            select(runs.c.id, runs.c.seq)
            .where(self._expired(older_than))
            .order_by(runs.c.finished_at)
            .limit(limit)
        )
        async with self.sa.read() as conn:
            return [(row.id, row.seq) for row in await conn.execute(query)]

    async def purge_runs(self, run_ids: Collection[uuid.UUID], older_than: float) -> int:
        # the runs are locked first (skipping any a retry holds right now), so none is
        # carried on again between the delete of its steps and its own
        pick = self._for_update(
            select(runs.c.id).where(runs.c.id.in_(list(run_ids)), self._expired(older_than))
        )
        async with self.sa.write() as conn:
            doomed = list((await conn.execute(pick)).scalars())
            if not doomed:
                return 0
            await conn.execute(delete(steps).where(steps.c.run_id.in_(doomed)))
            await conn.execute(
                delete(idempotency_keys).where(idempotency_keys.c.run_id.in_(doomed))
            )
            await conn.execute(delete(runs).where(runs.c.id.in_(doomed)))
        return len(doomed)

    async def purge_steps(self, run_id: uuid.UUID, up_to_seq: int, older_than: float) -> int:
        pick = self._for_update(
            select(runs.c.id).where(runs.c.id == run_id, self._expired(older_than))
        )
        async with self.sa.write() as conn:
            if (await conn.execute(pick)).first() is None:
                return 0
            result = await conn.execute(
                delete(steps).where(steps.c.run_id == run_id, steps.c.seq <= up_to_seq)
            )
        return result.rowcount

    # --- flows and upkeep -----------------------------------------------------------------

    async def sync_flows(self, specs: list[tuple[str, str, str, str]]) -> None:
        if not specs:
            return
        rows = [
            {
                "name": n,
                "version": v,
                "graph_hash": h,
                "description": d,
                "registered_at": self._now(),
                "last_seen_at": self._now(),
            }
            for n, v, h, d in specs
        ]
        keys = ["name", "version", "graph_hash"]
        stmt = self._upsert(flows, rows, keys, ["description", "last_seen_at"])
        async with self.sa.write() as conn:
            await conn.execute(stmt)

    async def flow_last_seen(self, name: str, version: str, graph_hash: str) -> datetime | None:
        query = select(flows.c.last_seen_at).where(
            flows.c.name == name, flows.c.version == version, flows.c.graph_hash == graph_hash
        )
        async with self.sa.read() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return None if value is None else _aware(value)

    async def now(self) -> datetime:
        async with self.sa.read() as conn:
            value = (await conn.execute(select(self._now()))).scalar_one()
        return _aware(value)

    async def ping(self) -> None:
        async with self.sa.read() as conn:
            await conn.execute(select(literal(1)))


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
