"""The production store: PostgreSQL through asyncpg on the hot paths.

Each hot call is one statement in autocommit: one round trip, no BEGIN or COMMIT. A
checkpoint's fenced UPDATE and its step's INSERT are one statement (data-modifying CTEs):
no row back means the fence failed and nothing was written. asyncpg prepares and caches
each statement per connection (``db.pg_connections`` holds them), and JSONB goes through
orjson.

The database's clock is PostgreSQL's ``now()``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import asyncpg
import orjson
from sqlalchemy import Table, func, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from db.core_store import RUN_COLUMN_NAMES, CoreStore
from db.database import Database
from db.models import IN_FLIGHT, steps
from db.pg_connections import Connections
from db.store import Claimed, LeaseLost, NewRun, StepRecord

# --- the SQL ---------------------------------------------------------------------------------

# -- insert_run: a new queued run; its deadline is the database's now + run_timeout
# held: its tenant had its limit of runs in flight. Runs one tenant creates at the same
# instant don't see each other, so on PostgreSQL a burst may pass the limit by its size.
INSERT_RUN = f"""
INSERT INTO runs (id, tenant, principal, flow, flow_version, graph_hash, status, mode, queue,
    priority, input, metadata, current_node, created_at, seq, version, state_seq,
    deliveries, cancel_requested, pause_requested, retries, trigger, parent_run_id, parent_seq,
    cursor, deadline_at, held)
VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10, $11, $12, $13, 0, 0, 0, 0, false,
    false, 0, $14, $15, $16, $17, now() + make_interval(secs => $18::float8),
    $19::int IS NOT NULL AND (SELECT count(*) FROM runs WHERE tenant = $2::varchar AND {IN_FLIGHT})
        >= coalesce((SELECT concurrency FROM tenant_limits WHERE tenant = $2::varchar), $19::int))
RETURNING deadline_at, held
"""

# -- claim: take the lease of a claimable run no live holder has; count the delivery
CLAIM = """
UPDATE runs SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3),
    deliveries = deliveries + 1, status = 'running', started_at = coalesce(started_at, now()),
    version = version + 1
WHERE id = $1 AND status IN ('queued', 'running')
    AND (lease_owner IS NULL OR lease_expires_at < now() OR lease_owner = $2)
RETURNING id, flow, flow_version, graph_hash, status, seq, cursor, state, state_seq, input,
    deliveries, cancel_requested, deadline_at, history_bytes, pause_requested, now(), tenant
"""

# -- get_run / run_version: point reads by id
GET_RUN = (
    f"SELECT {', '.join(RUN_COLUMN_NAMES)} FROM runs WHERE id = $1"
    " AND tenant = coalesce($2::text, tenant) AND principal = coalesce($3::text, principal)"
)
RUN_VERSION = "SELECT version, status FROM runs WHERE id = $1"

STEP_COLUMNS = [c.name for c in steps.c]
# INSERT ... SELECT infers no parameter types from the target columns: cast each one.
STEP_CASTS = [re.sub(r"\(\d+\)", "", c.type.compile(dialect=postgresql.dialect())) for c in steps.c]


@lru_cache(maxsize=128)
def checkpoint_sql(keys: tuple[str, ...], renew: bool, with_step: bool) -> str:
    """-- checkpoint: set ``keys`` on the run, renew its lease if asked, reset its delivery
    count, fenced by (id, seq, lease_owner), and insert the step only if the fence held,
    adding its bytes to the run's history; returns the pending cancel and pause flags, no
    row when the fence failed.
    Parameters: $1 id, $2 fence seq, $3 owner, then ``keys``, then the lease TTL (if
    renewing), then the step's history bytes and columns."""
    sets = [f"{key} = ${4 + i}" for i, key in enumerate(keys)]
    n = 4 + len(keys)
    if renew:
        sets.append(f"lease_expires_at = now() + make_interval(secs => ${n})")
        n += 1
    if with_step:
        sets.append(f"history_bytes = history_bytes + ${n}::bigint")
        n += 1
    sets += ["deliveries = 0", "version = version + 1"]
    update = (
        f"UPDATE runs SET {', '.join(sets)} "
        "WHERE id = $1 AND seq = $2 AND lease_owner = $3 "
        "RETURNING cancel_requested, pause_requested"
    )
    if not with_step:
        return update
    placeholders = ", ".join(f"${n + i}::{cast}" for i, cast in enumerate(STEP_CASTS))
    return (
        f"WITH run AS ({update}), "
        f"step AS (INSERT INTO steps ({', '.join(STEP_COLUMNS)}) "
        f"SELECT {placeholders} FROM run) "
        "SELECT cancel_requested, pause_requested FROM run"
    )


@lru_cache(maxsize=64)
def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """-- insert_row: one row of ``table`` (audit entries, idempotency keys)."""
    placeholders = ", ".join(f"${i + 1}" for i in range(len(columns)))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _setup(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_json, decoder=orjson.loads, schema="pg_catalog", format="text"
        )


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class PostgresStore(CoreStore):
    multi_host = True

    def __init__(self, sa: Database, *, pool_size: int = 10) -> None:
        super().__init__(sa)
        self._connections = Connections(_dsn(sa.url), pool_size, _setup)

    # --- the clock and dialect bits for the cold paths ------------------------------------

    def _now(self) -> ColumnElement:
        return func.now()

    def _later(self, seconds: float) -> ColumnElement:
        return func.now() + timedelta(seconds=seconds)

    def _upsert(self, table: Any, rows: list[dict[str, Any]], keys: list[str], cols: list[str]):
        stmt = pg_insert(table).values(rows)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in cols}
        )

    def _insert_ignore(self, table: Any, values: dict[str, Any], keys: list[str]):
        return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)

    def _for_update(self, query: Select) -> Select:
        return query.with_for_update(skip_locked=True)

    async def serialize(self, conn: AsyncConnection, name: str) -> None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})

    # --- runs -----------------------------------------------------------------------------

    async def _insert_run(
        self, new: NewRun, run_id: uuid.UUID, now: datetime, extras: list[tuple[Any, dict]]
    ) -> tuple[datetime | None, bool]:
        params = (
            run_id,
            new.tenant,
            new.principal,
            new.flow,
            new.flow_version,
            new.graph_hash,
            new.mode,
            new.queue,
            new.priority,
            new.input,
            new.metadata,
            new.current_node,
            now,
            new.trigger,
            new.parent[0] if new.parent else None,
            new.parent[1] if new.parent else None,
            new.cursor,
            new.run_timeout or None,
            new.tenant_limit,
        )
        try:
            async with self._connections.connection() as conn:
                if not extras:
                    row = await conn.fetchrow(INSERT_RUN, *params)
                else:
                    async with conn.transaction():
                        row = await conn.fetchrow(INSERT_RUN, *params)
                        await _insert_rows(conn, extras)
                return row["deadline_at"], row["held"]
        except asyncpg.UniqueViolationError as exc:
            raise IntegrityError(INSERT_RUN, params, exc) from exc

    async def get(
        self, run_id: uuid.UUID, *, tenant: str | None = None, principal: str | None = None
    ) -> Mapping[str, Any] | None:
        async with self._connections.connection() as conn:
            row = await conn.fetchrow(GET_RUN, run_id, tenant, principal)
        return dict(row) if row is not None else None

    async def version(self, run_id: uuid.UUID) -> tuple[int, str] | None:
        async with self._connections.connection() as conn:
            row = await conn.fetchrow(RUN_VERSION, run_id)
        return (row[0], row[1]) if row is not None else None

    async def insert_rows(self, *rows: tuple[Table, dict[str, Any]]) -> None:
        try:
            async with self._connections.connection() as conn:
                if len(rows) == 1:
                    await _insert_rows(conn, rows)
                else:
                    async with conn.transaction():
                        await _insert_rows(conn, rows)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError("INSERT", None, exc) from exc

    # --- the engine -----------------------------------------------------------------------

    async def claim(self, run_id: uuid.UUID, owner: str, ttl: float) -> Claimed | None:
        async with self._connections.connection() as conn:
            row = await conn.fetchrow(CLAIM, run_id, owner, float(ttl))
        return Claimed(*row) if row is not None else None

    async def checkpoint(
        self,
        run_id: uuid.UUID,
        owner: str,
        seq: int,
        ttl: float | None,
        step: StepRecord | None,
        run_values: dict[str, Any],
    ) -> str | None:
        values = {**run_values, "seq": step.seq if step is not None else seq}
        renew = ttl is not None and "lease_expires_at" not in values
        sql = checkpoint_sql(tuple(values), renew, step is not None)
        args: list[Any] = [run_id, seq, owner, *values.values()]
        if renew:
            args.append(float(ttl))  # type: ignore[arg-type]
        if step is not None:
            args += [
                step.history_bytes,
                run_id,
                step.seq,
                step.node,
                step.status,
                step.attempts,
                step.action,
                step.started_at,
                step.finished_at,
                step.duration_ms,
                step.worker,
                step.error,
                step.delta,
                step.cursor,
                step.next_node,
                step.output,
                step.cached,
            ]
        async with self._connections.connection() as conn:
            row = await conn.fetchrow(sql, *args)
        if row is None:
            raise LeaseLost(str(run_id))
        return "cancel" if row[0] else "pause" if row[1] else None

    # --- upkeep ---------------------------------------------------------------------------

    async def close(self) -> None:
        await self._connections.close()
        await self.sa.close()


async def _insert_rows(conn: asyncpg.Connection, rows: Any) -> None:
    for table, values in rows:
        await conn.execute(insert_sql(table.name, tuple(values)), *values.values())
