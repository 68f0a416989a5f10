"""The embedded store: SQLite through the stdlib driver on the hot paths.

Writes go through ``SqliteWriter`` (group commit on the event loop); point reads by id run
on the loop through a read-only connection that never waits (WAL readers don't block).
Values are stored exactly as SQLAlchemy's types store them (UUIDs as 32 hex digits, UTC
times as ``YYYY-MM-DD HH:MM:SS.ffffff``, JSON as text), so the cold paths in
``db.core_store`` read the same rows.

The database's clock here is the host's: every process on one SQLite file shares it, and
SQLite's own ``'now'`` reads that same clock (in milliseconds only). The store reads it
once per statement, in microseconds, and binds it, so that times recorded one after the
other never go backwards.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import String, Table, insert, literal
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from db.core_store import RUN_COLUMN_NAMES, CoreStore
from db.database import Database
from db.models import IN_FLIGHT
from db.sqlite_writer import SqliteWriter, connect
from db.store import TERMINAL, Claimed, LeaseLost, NewRun, StepRecord
from db.types import utcnow

# --- the SQL ---------------------------------------------------------------------------------

# -- insert_run: a new queued run; its deadline is the database's now + run_timeout
INSERT_RUN = """
INSERT INTO runs (id, tenant, principal, flow, flow_version, graph_hash, status, mode, queue,
    priority, input, metadata, current_node, created_at, seq, version, state_seq,
    deliveries, cancel_requested, pause_requested, retries, trigger, parent_run_id,
    parent_seq, cursor, deadline_at, held)
VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0, ?, ?, ?, ?, ?, ?)
"""

# -- tenant_full: whether a tenant has its limit of runs in flight (ix_runs_in_flight:
# without statistics SQLite prefers (tenant, status), walking a flood's held runs too)
IN_FLIGHT_FROM = "runs INDEXED BY ix_runs_in_flight"
TENANT_FULL = f"""
SELECT (SELECT count(*) FROM {IN_FLIGHT_FROM} WHERE tenant = :tenant AND {IN_FLIGHT})
    >= coalesce((SELECT concurrency FROM tenant_limits WHERE tenant = :tenant), :limit)
"""

# -- claim: take the lease of a claimable run no live holder has; count the delivery
CLAIM = """
UPDATE runs SET lease_owner = :owner, lease_expires_at = :expires,
    deliveries = deliveries + 1, status = 'running', started_at = coalesce(started_at, :now),
    version = version + 1
WHERE id = :id AND status IN ('queued', 'running')
    AND (lease_owner IS NULL OR lease_expires_at < :now OR lease_owner = :owner)
RETURNING id, flow, flow_version, graph_hash, status, seq, cursor, state, state_seq, input,
    deliveries, cancel_requested, deadline_at, history_bytes, pause_requested, tenant
"""

# -- insert_step: the step a checkpoint commits (only after its fenced UPDATE held)
INSERT_STEP = """
INSERT INTO steps (run_id, seq, node, status, attempts, action, started_at, finished_at,
    duration_ms, worker, error, delta, cursor, next_node, output, cached)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# -- purge_runs: which of the runs (a JSON array of ids) are finished and ended before the
# cutoff; then their steps, idempotency keys and the runs themselves go
_FINISHED = f"status IN ({', '.join(repr(s) for s in TERMINAL)}) AND finished_at IS NOT NULL"
EXPIRED_AMONG = f"""
SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?)) AND {_FINISHED}
    AND finished_at < ?
"""
DELETE_STEPS_OF = "DELETE FROM steps WHERE run_id IN (SELECT value FROM json_each(?))"
DELETE_KEYS_OF = "DELETE FROM idempotency_keys WHERE run_id IN (SELECT value FROM json_each(?))"
DELETE_RUNS = "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))"

# -- purge_steps: a finished run's steps up to a seq, if it ended before the cutoff
DELETE_STEPS_UP_TO = f"""
DELETE FROM steps WHERE run_id = ? AND seq <= ?
    AND EXISTS (SELECT 1 FROM runs WHERE id = ? AND {_FINISHED} AND finished_at < ?)
"""

# -- get_run / run_version: point reads by id
GET_RUN = (
    f"SELECT {', '.join(RUN_COLUMN_NAMES)} FROM runs WHERE id = ?1"
    " AND tenant = coalesce(?2, tenant) AND principal = coalesce(?3, principal)"
)
RUN_VERSION = "SELECT version, status FROM runs WHERE id = ?"


@lru_cache(maxsize=128)
def checkpoint_sql(keys: tuple[str, ...], renew: bool, with_step: bool) -> str:
    """-- checkpoint: set ``keys`` on the run, renew its lease if asked, add the step's bytes
    to the run's history, reset its delivery count, fenced by (id, seq, lease_owner);
    returns the pending cancel and pause flags."""
    sets = [f"{key} = ?" for key in keys]
    if renew:
        sets.append("lease_expires_at = ?")
    if with_step:
        sets.append("history_bytes = history_bytes + ?")
    sets += ["deliveries = 0", "version = version + 1"]
    return (
        f"UPDATE runs SET {', '.join(sets)} "
        "WHERE id = ? AND seq = ? AND lease_owner = ? RETURNING cancel_requested, pause_requested"
    )


# --- values as SQLAlchemy's types store them -------------------------------------------------


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text = value.isoformat(" ")
    return text if value.microsecond else text + ".000000"


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _clock(after: float = 0.0) -> str:
    """The database's clock (the host's), ``after`` seconds on, as the store writes times."""
    return _time(utcnow() + timedelta(seconds=after))  # type: ignore[return-value]


def _read_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if value is not None else None


def _read_json(value: str | None) -> Any:
    return orjson.loads(value) if value is not None else None


_ENCODE = {
    "cursor": _json,
    "state": _json,
    "output": _json,
    "error": _json,
    "finished_at": _time,
    "lease_expires_at": _time,
    "wake_at": _time,
    "waiting_for": _json,
}
_DECODE: dict[str, Any] = {
    "id": uuid.UUID,
    "cancel_requested": bool,
    "pause_requested": bool,
    "held": bool,
    "created_at": _read_time,
    "wake_at": _read_time,
    "waiting_for": _read_json,
    "trigger": _read_json,
    "parent_run_id": uuid.UUID,
    "started_at": _read_time,
    "finished_at": _read_time,
    "input": _read_json,
    "output": _read_json,
    "error": _read_json,
    "metadata": _read_json,
}
_RUN_DECODERS = [(name, _DECODE.get(name)) for name in RUN_COLUMN_NAMES]


def _run_row(raw: tuple[Any, ...]) -> dict[str, Any]:
    return {
        name: (decode(value) if decode is not None and value is not None else value)
        for (name, decode), value in zip(_RUN_DECODERS, raw, strict=True)
    }


class SqliteStore(CoreStore):
    multi_host = False  # one file, one machine
    _in_flight_from = IN_FLIGHT_FROM

    def __init__(self, sa: Database) -> None:
        super().__init__(sa)
        parsed = make_url(sa.url)
        path = parsed.database
        if not path or path == ":memory:" or parsed.query.get("uri"):
            raise ValueError("the SQLite store needs a database file (sqlite:///path/to/file.db)")
        self.path = path
        self.writer = SqliteWriter(path)
        self._reader: sqlite3.Connection | None = None
        self._plans: dict[tuple[Table, tuple[str, ...]], tuple[str, list[Any]]] = {}

    # --- the clock and dialect bits for the cold paths ------------------------------------

    def _now(self) -> ColumnElement:
        return literal(_clock(), String)

    def _later(self, seconds: float) -> ColumnElement:
        return literal(_clock(seconds), String)

    def _upsert(self, table: Any, rows: list[dict[str, Any]], keys: list[str], cols: list[str]):
        stmt = sqlite_insert(table).values(rows)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in cols}
        )

    def _insert_ignore(self, table: Any, values: dict[str, Any], keys: list[str]):
        return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)

    # --- runs -----------------------------------------------------------------------------

    async def _insert_run(
        self, new: NewRun, run_id: uuid.UUID, now: datetime, extras: list[tuple[Any, dict]]
    ) -> tuple[datetime | None, bool]:
        planned = [self._planned(table, values) for table, values in extras]
        timeout = new.run_timeout or None
        params = (
            run_id.hex,
            new.tenant,
            new.principal,
            new.flow,
            new.flow_version,
            new.graph_hash,
            new.mode,
            new.queue,
            new.priority,
            _json(new.input),
            _json(new.metadata),
            new.current_node,
            _time(now),
            _json(new.trigger),
            new.parent[0].hex if new.parent else None,
            new.parent[1] if new.parent else None,
            _json(new.cursor),
            _clock(timeout) if timeout else None,
        )

        held = False

        def insert_run(conn: sqlite3.Connection) -> None:
            nonlocal held
            if new.tenant_limit is not None:  # exact: the writer is the only one
                limits = {"tenant": new.tenant, "limit": new.tenant_limit}
                held = bool(conn.execute(TENANT_FULL, limits).fetchone()[0])
            conn.execute(INSERT_RUN, (*params, held))
            for sql, row in planned:
                conn.execute(sql, row)

        try:
            await self.writer.run(insert_run)
            return _read_time(params[-1]), held
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(INSERT_RUN, params, exc) from exc

    async def get(
        self, run_id: uuid.UUID, *, tenant: str | None = None, principal: str | None = None
    ) -> Mapping[str, Any] | None:
        try:
            raw = self._read().execute(GET_RUN, (run_id.hex, tenant, principal)).fetchone()
        except sqlite3.Error:  # e.g. busy during a WAL recovery
            return await self._get_pooled(run_id, tenant, principal)
        return _run_row(raw) if raw is not None else None

    async def version(self, run_id: uuid.UUID) -> tuple[int, str] | None:
        try:
            raw = self._read().execute(RUN_VERSION, (run_id.hex,)).fetchone()
        except sqlite3.Error:
            return await self._version_pooled(run_id)
        return (raw[0], raw[1]) if raw is not None else None

    def _read(self) -> sqlite3.Connection:
        """Cheap indexed single-row SELECTs only: they run on the event loop."""
        if self._reader is None:
            self._reader = connect(self.path, query_only=True)
        return self._reader

    async def insert_rows(self, *rows: tuple[Table, dict[str, Any]]) -> None:
        planned = [self._planned(table, values) for table, values in rows]

        def insert_all(conn: sqlite3.Connection) -> None:
            for sql, row in planned:
                conn.execute(sql, row)

        try:
            await self.writer.run(insert_all)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError("INSERT", None, exc) from exc

    def _planned(self, table: Table, values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """SQLAlchemy's own INSERT for these columns, bound as its types bind them."""
        keys = tuple(values)
        plan = self._plans.get((table, keys))
        if plan is None:
            compiled = insert(table).compile(dialect=self.sa.writer.dialect, column_keys=list(keys))
            names = list(compiled.positiontup or ())
            processors = compiled._bind_processors
            plan = (str(compiled), [(name, processors.get(name)) for name in names])
            self._plans[(table, keys)] = plan
        sql, binds = plan
        return sql, tuple(
            values[name] if bind is None else bind(values[name]) for name, bind in binds
        )

    # --- the engine -----------------------------------------------------------------------

    async def claim(self, run_id: uuid.UUID, owner: str, ttl: float) -> Claimed | None:
        def claim(conn: sqlite3.Connection) -> tuple | None:
            now = utcnow()
            params = {
                "owner": owner,
                "expires": _time(now + timedelta(seconds=ttl)),
                "now": _time(now),
                "id": run_id.hex,
            }
            row = conn.execute(CLAIM, params).fetchone()
            return None if row is None else (*row, now)

        raw = await self.writer.run(claim)
        if raw is None:
            return None
        return Claimed(
            uuid.UUID(raw[0]),
            raw[1],
            raw[2],
            raw[3],
            raw[4],
            raw[5],
            _read_json(raw[6]),
            _read_json(raw[7]),
            raw[8],
            _read_json(raw[9]),
            raw[10],
            bool(raw[11]),
            _read_time(raw[12]),
            raw[13],
            bool(raw[14]),
            raw[16],
            raw[15],
        )

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
        params: list[Any] = [
            _ENCODE[key](value) if key in _ENCODE else value for key, value in values.items()
        ]
        if renew:
            params.append(_clock(ttl))  # type: ignore[arg-type]
        if step is not None:
            params.append(step.history_bytes)
        params += [run_id.hex, seq, owner]
        step_params = _step_params(run_id, step) if step is not None else None

        def commit(conn: sqlite3.Connection) -> bool:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                raise LeaseLost(str(run_id))
            if step_params is not None:
                conn.execute(INSERT_STEP, step_params)
            return _asked(row[0], row[1])

        return await self.writer.run(commit)

    # --- retention: through the one writer, in transactions the caller keeps small -------

    async def purge_runs(self, run_ids: Collection[uuid.UUID], older_than: float) -> int:
        ids = orjson.dumps([run_id.hex for run_id in run_ids]).decode()
        cutoff = _clock(-older_than)

        def purge(conn: sqlite3.Connection) -> int:
            doomed = [row[0] for row in conn.execute(EXPIRED_AMONG, (ids, cutoff))]
            if doomed:
                chosen = orjson.dumps(doomed).decode()
                conn.execute(DELETE_STEPS_OF, (chosen,))
                conn.execute(DELETE_KEYS_OF, (chosen,))
                conn.execute(DELETE_RUNS, (chosen,))
            return len(doomed)

        return await self.writer.run(purge)

    async def purge_steps(self, run_id: uuid.UUID, up_to_seq: int, older_than: float) -> int:
        params = (run_id.hex, up_to_seq, run_id.hex, _clock(-older_than))
        return await self.writer.run(lambda conn: conn.execute(DELETE_STEPS_UP_TO, params).rowcount)

    # --- upkeep ---------------------------------------------------------------------------

    async def close(self) -> None:
        self.writer.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await self.sa.close()


def _asked(cancel: Any, pause: Any) -> str | None:
    return "cancel" if cancel else "pause" if pause else None


def _step_params(run_id: uuid.UUID, step: StepRecord) -> tuple[Any, ...]:
    return (
        run_id.hex,
        step.seq,
        step.node,
        step.status,
        step.attempts,
        step.action,
        _time(step.started_at),
        _time(step.finished_at),
        step.duration_ms,
        step.worker,
        _json(step.error),
        _json(step.delta),
        _json(step.cursor),
        step.next_node,
        _json(step.output),
        step.cached,
    )
