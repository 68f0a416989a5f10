"""Run and step queries for the API and the CLI: create, read, list, cancel."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, and_, delete, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from core.errors import InvalidInput
from core.ids import uuid7, uuid7_bound
from core.jsonutil import dumps_str, loads
from db.database import Database
from db.models import idempotency_keys, runs, steps
from db.types import UTCDateTime, utcnow

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
UNFINISHED = ("queued", "running", "waiting")

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
]
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
]


@dataclass(slots=True)
class NewRun:
    tenant: str
    principal: str
    flow: str
    flow_version: str
    graph_hash: str
    mode: str
    queue: str
    priority: int
    input: dict[str, Any]
    metadata: dict[str, Any]
    run_timeout: float | None = None
    current_node: str | None = None  # the node the run starts at


@dataclass(slots=True)
class Idempotency:
    key: str
    request_hash: str
    ttl: float


@dataclass(slots=True)
class RunFilter:
    tenant: str | None  # None: every tenant
    principal: str | None = None  # set: only this principal's runs
    flow: str | None = None
    statuses: Sequence[str] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 50
    before_id: uuid.UUID | None = None


_MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def _id_bound(moment: datetime, *, upper: bool = False) -> uuid.UUID:
    """``uuid7_bound`` for any moment: UUIDv7 time starts at the epoch (48-bit milliseconds)."""
    return uuid7_bound(min(max(moment, _MIN_TIME), _MAX_TIME), upper=upper)


# The point-read path of ``get`` on SQLite (``Database.point_reader``): the same columns,
# decoded to what SQLAlchemy's types give (UUID, aware UTC datetimes, parsed JSON, bool).
_GET_SQL = f"SELECT {', '.join(c.name for c in RUN_COLUMNS)} FROM runs WHERE id = ?"
_VERSION_SQL = "SELECT version, status FROM runs WHERE id = ?"


def _sqlite_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if value is not None else None


def _sqlite_json(value: str | None) -> Any:
    return loads(value) if value is not None else None


def _sqlite_decoder(column: Any) -> Any:
    if column is runs.c.id:
        return uuid.UUID
    if column is runs.c.cancel_requested:
        return bool
    if isinstance(column.type, UTCDateTime):
        return _sqlite_time
    if isinstance(column.type, JSON):
        return _sqlite_json
    return None


_DECODERS = [(c.name, _sqlite_decoder(c)) for c in RUN_COLUMNS]


def _run_row(raw: tuple[Any, ...]) -> dict[str, Any]:
    return {
        name: (decode(value) if decode is not None and value is not None else value)
        for (name, decode), value in zip(_DECODERS, raw, strict=True)
    }


class RunRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        new: NewRun,
        idempotency: Idempotency | None = None,
        *,
        extra_rows: Callable[[uuid.UUID], Sequence[tuple[Any, dict[str, Any]]]] | None = None,
    ) -> tuple[Mapping[str, Any], bool]:
        """Insert a queued run; with a key seen before, return that run instead (created=False).
        ``extra_rows(run_id)``: rows (an audit entry) committed in the run's transaction, so
        only when the run is created."""
        if idempotency is not None:
            existing = await self._replay(new, idempotency)
            if existing is not None:
                return existing, False
        now = utcnow()
        run_id = uuid7(int(now.timestamp() * 1000))
        values = {
            "id": run_id,
            "tenant": new.tenant,
            "principal": new.principal,
            "flow": new.flow,
            "flow_version": new.flow_version,
            "graph_hash": new.graph_hash,
            "status": "queued",
            "mode": new.mode,
            "queue": new.queue,
            "priority": new.priority,
            "input": new.input,
            "metadata": new.metadata,
            "current_node": new.current_node,
            "created_at": now,
            "seq": 0,
            "version": 0,
            "state_seq": 0,
            "deliveries": 0,
            "cancel_requested": False,
            "deadline_at": now + timedelta(seconds=new.run_timeout) if new.run_timeout else None,
        }
        rows: list[tuple[Any, dict[str, Any]]] = [(runs, values)]
        if idempotency is not None:
            rows.append(
                (
                    idempotency_keys,
                    {
                        "tenant": new.tenant,
                        "flow": new.flow,
                        "key": idempotency.key,
                        "request_hash": idempotency.request_hash,
                        "run_id": run_id,
                        "created_at": now,
                    },
                )
            )
        if extra_rows is not None:
            rows.extend(extra_rows(run_id))
        try:
            # One transaction for the run and its key, shared with concurrent submissions.
            await self.db.insert_rows(*rows)
        except IntegrityError:
            if idempotency is None:
                raise
            existing = await self._replay(new, idempotency)
            if existing is None:
                raise
            return existing, False
        # The row as just committed (no re-read): what ``get`` would return for it now.
        row = {c.name: values.get(c.name) for c in RUN_COLUMNS}
        row["input"] = loads(dumps_str(new.input))
        row["metadata"] = loads(dumps_str(new.metadata))
        return row, True

    async def _replay(self, new: NewRun, idem: Idempotency) -> RowMapping | None:
        cutoff = utcnow() - timedelta(seconds=idem.ttl)
        key_match = and_(
            idempotency_keys.c.tenant == new.tenant,
            idempotency_keys.c.flow == new.flow,
            idempotency_keys.c.key == idem.key,
        )
        async with self.db.read() as conn:
            found = (
                await conn.execute(
                    select(
                        idempotency_keys.c.request_hash,
                        idempotency_keys.c.run_id,
                        idempotency_keys.c.created_at,
                    ).where(key_match)
                )
            ).first()
        if found is None:
            return None
        if found.created_at < cutoff:
            async with self.db.write() as conn:
                await conn.execute(
                    delete(idempotency_keys).where(
                        key_match, idempotency_keys.c.created_at < cutoff
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

    async def get(self, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        point = self.db.point_reader()
        if point is not None:
            try:
                raw = point.execute(_GET_SQL, (run_id.hex,)).fetchone()
            except sqlite3.Error:
                pass  # e.g. busy during a WAL recovery: take the pooled path
            else:
                return _run_row(raw) if raw is not None else None
        async with self.db.read() as conn:
            result = await conn.execute(select(*RUN_COLUMNS).where(runs.c.id == run_id))
            return result.mappings().first()

    async def version(self, run_id: uuid.UUID) -> tuple[int, str] | None:
        point = self.db.point_reader()
        if point is not None:
            try:
                raw = point.execute(_VERSION_SQL, (run_id.hex,)).fetchone()
            except sqlite3.Error:
                pass
            else:
                return (raw[0], raw[1]) if raw is not None else None
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(runs.c.version, runs.c.status).where(runs.c.id == run_id))
            ).first()
        return (row.version, row.status) if row else None

    async def list(self, f: RunFilter) -> list[RowMapping]:
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
        async with self.db.read() as conn:
            return list((await conn.execute(query)).mappings().all())

    async def steps(self, run_id: uuid.UUID) -> list[RowMapping]:
        async with self.db.read() as conn:
            result = await conn.execute(
                select(*STEP_COLUMNS).where(steps.c.run_id == run_id).order_by(steps.c.seq)
            )
            return list(result.mappings().all())

    async def cancel(self, run_id: uuid.UUID) -> RowMapping | None:
        """Cancel a queued or waiting run at once; flag a running one for its next checkpoint."""
        now = utcnow()
        async with self.db.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_(("queued", "waiting")))
                .values(
                    status="cancelled",
                    finished_at=now,
                    cancel_requested=True,
                    lease_owner=None,
                    lease_expires_at=None,
                    version=runs.c.version + 1,
                    error={
                        "type": "cancelled",
                        "message": "cancelled before it ran on",
                        "node": None,
                    },
                )
            )
            await conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.status == "running",
                    runs.c.cancel_requested.is_(False),
                )
                .values(cancel_requested=True, version=runs.c.version + 1)
            )
        return await self.get(run_id)
