"""Tables: flows, runs, steps, idempotency keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.types import JSONType, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FlowRecord(Base):
    """A (flow, version, graph) some process has loaded, and when one last had it loaded
    (``last_seen_at``, the database's clock; refreshed by each process's supervisor)."""

    __tablename__ = "flows"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    graph_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String, default="")
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    principal: Mapped[str] = mapped_column(String(200))
    flow: Mapped[str] = mapped_column(String(100))
    flow_version: Mapped[str] = mapped_column(String(100))
    graph_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(100), default="default")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    input: Mapped[Any] = mapped_column(JSONType)
    output: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    metadata_: Mapped[Any] = mapped_column("metadata", JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    current_node: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # Checkpoint: seq counts committed steps and fences every commit.
    seq: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    state: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    state_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Who may execute it: the database alone decides.
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_runs_tenant_id", "tenant", "id"),
        Index("ix_runs_tenant_flow_id", "tenant", "flow", "id"),
        Index("ix_runs_tenant_status_id", "tenant", "status", "id"),
        Index(
            "ix_runs_unfinished",
            "status",
            "lease_expires_at",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )


class Step(Base):
    __tablename__ = "steps"

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    action: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[float] = mapped_column()
    worker: Mapped[str] = mapped_column(String(200))
    error: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    delta: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    # The cursor after this step (SQLite: a trigger applies it to the run, see 0004).
    cursor: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    next_node: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # What the node streamed (core.context.emit): [[event k, attempt, chunk] or [k, attempt]
    # for a reset, ...] under "events"; see core/events.py.
    output: Mapped[Any | None] = mapped_column(JSONType, nullable=True)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200), primary_key=True)
    flow: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ApiKey(Base):
    """An API key: only its SHA-256 is kept; ``prefix`` is what a human can recognise."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_api_keys_tenant_id", "tenant", "id"),)


class AuditEntry(Base):
    """One mutating call: who, in which tenant, did what to what, and when."""

    __tablename__ = "audit_log"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # UUIDv7: time ordered
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    tenant: Mapped[str] = mapped_column(String(100))
    principal: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[Any | None] = mapped_column(JSONType, nullable=True)

    __table_args__ = (Index("ix_audit_log_tenant_id", "tenant", "id"),)


api_keys = ApiKey.__table__
audit_log = AuditEntry.__table__


runs = Run.__table__
steps = Step.__table__
flows = FlowRecord.__table__
idempotency_keys = IdempotencyKey.__table__


# --- distributed execution (migration 0003) -----------------------------------------------

# When the run's last broker message was sent (NULL: at creation). Added here, not in the
# class body, so that this section stays self-contained.
Run.dispatched_at = mapped_column(UTCDateTime(), nullable=True)


class FlowSlot(Base):
    """One run of ``flow`` executing now: a per-flow concurrency slot, held as a lease."""

    __tablename__ = "flow_slots"

    flow: Mapped[str] = mapped_column(String(100), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkerRecord(Base):
    """A live worker process: its heartbeat and what it is running."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # name/pid
    name: Mapped[str] = mapped_column(String(200))
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[Any] = mapped_column(JSONType)
    running: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Lock(Base):
    """A named lease, e.g. the sweeper's: one holder at a time, until it expires."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(300))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


flow_slots = FlowSlot.__table__
workers = WorkerRecord.__table__
locks = Lock.__table__


# --- bounded history (migration 0006) -----------------------------------------------------

# The bytes the run's step rows keep (deltas and cursors), added by each checkpoint and
# read back at the claim: MAX_HISTORY_BYTES caps it.
Run.history_bytes = mapped_column(BigInteger, default=0, server_default=text("0"))
# Retention finds finished runs by when they finished, and their idempotency keys by run.
Index(
    "ix_runs_finished_at",
    runs.c.finished_at,
    postgresql_where=text("finished_at IS NOT NULL"),
    sqlite_where=text("finished_at IS NOT NULL"),
)
Index("ix_idempotency_keys_run_id", idempotency_keys.c.run_id)


# --- durable control (migration 0009) -----------------------------------------------------

# What a waiting run waits for: {"node", "request"} (DESIGN.md section 10, human input).
Run.waiting_for = mapped_column(JSONType, nullable=True)
# When a sleeping run wakes, or a waiting run's wait times out (the database's clock).
Run.wake_at = mapped_column(UTCDateTime(), nullable=True)
# An operator asked the running run to stop at its next checkpoint, holding nothing.
Run.pause_requested = mapped_column(Boolean, default=False, server_default=text("false"))
# Who started it: {"type": "api" | "cli" | "schedule" | "replay", "id"?: ...}.
Run.trigger = mapped_column(JSONType, nullable=True)
# A replay's source: the run and the step it was replayed from.
Run.parent_run_id = mapped_column(Uuid, nullable=True)
Run.parent_seq = mapped_column(Integer, nullable=True)
# How many times an operator carried the run on after it failed (retry).
Run.retries = mapped_column(Integer, default=0, server_default=text("0"))
# The sweeper's timers: only runs with a wake-up time, by status and when they are due.
Index(
    "ix_runs_status_wake_at",
    runs.c.status,
    runs.c.wake_at,
    postgresql_where=text("wake_at IS NOT NULL"),
    sqlite_where=text("wake_at IS NOT NULL"),
)
Index("ix_runs_parent_run_id", runs.c.parent_run_id)


# --- declarative flows (migration 0011) ---------------------------------------------------


class DeclaredFlow(Base):
    """A flow made of catalog nodes, posted to ``POST /v1/flows``: every process loads it."""

    __tablename__ = "declared_flows"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    document: Mapped[Any] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_by: Mapped[str] = mapped_column(String(200))


declared_flows = DeclaredFlow.__table__


# --- tenant fairness (migration 0012) -----------------------------------------------------

# Queued, but held back in the database: its tenant had TENANT_CONCURRENCY runs in flight
# when it was created. It is handed over when one of them ends (or by a sweep).
Run.held = mapped_column(Boolean, nullable=False, default=False, server_default=text("false"))
IN_FLIGHT = "status IN ('queued', 'running') AND NOT held"
HELD = "held AND status = 'queued'"
Index(
    "ix_runs_in_flight",
    runs.c.tenant,
    postgresql_where=text(IN_FLIGHT),
    sqlite_where=text(IN_FLIGHT),
)
Index(
    "ix_runs_held",
    runs.c.tenant,
    runs.c.priority.desc(),
    runs.c.id,
    postgresql_where=text(HELD),
    sqlite_where=text(HELD),
)


class TenantLimit(Base):
    """A cross-tenant admin's override of ``TENANT_CONCURRENCY`` for one tenant."""

    __tablename__ = "tenant_limits"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    concurrency: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(200))


tenant_limits = TenantLimit.__table__


# --- node result caching (migration 0013) -------------------------------------------------

# Served from the node cache: exec did not run for this step.
Step.cached = mapped_column(Boolean, nullable=False, default=False, server_default=text("false"))


class NodeCacheEntry(Base):
    """An ``exec`` result kept for a node that opted in, per tenant, until ``expires_at``."""

    __tablename__ = "node_cache"

    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    flow: Mapped[str] = mapped_column(String(100), primary_key=True)
    node: Mapped[str] = mapped_column(String(500), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


node_cache = NodeCacheEntry.__table__


# --- webhooks (migration 0014) ------------------------------------------------------------


class WebhookSubscription(Base):
    """A tenant's outbound webhook: where to POST which run events, signed with ``secret``."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[Any] = mapped_column(JSONType)
    flow: Mapped[str | None] = mapped_column(String(100), nullable=True)
    secret: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))


webhook_subscriptions = WebhookSubscription.__table__


class WebhookDelivery(Base):
    """The outbox: one event for one subscription, sent until a 2xx or given up."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    event: Mapped[str] = mapped_column(String(50))
    payload: Mapped[Any] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(20))  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


webhook_deliveries = WebhookDelivery.__table__
Index("ix_webhook_deliveries_due", webhook_deliveries.c.status, webhook_deliveries.c.next_at)


class WebhookAttempt(Base):
    """The delivery log: one POST of one delivery, its status code or error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    duration_ms: Mapped[float] = mapped_column(Float)


webhook_attempts = WebhookAttempt.__table__


# --- schedules (migration 0015) -----------------------------------------------------------


class ScheduleRecord(Base):
    """Runs of a flow started on a cron or interval tick, by whichever process is up.

    ``next_run_at`` is the tick not yet fired; firing it is one conditional update of this
    column (the tick the firing process read), so one process wins each tick. ``name`` is
    set for schedules declared in code (``register(..., schedules=...)``), unique per tenant.
    """

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    flow: Mapped[str] = mapped_column(String(100))
    version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    cron: Mapped[str | None] = mapped_column(String(200), nullable=True)
    every: Mapped[float | None] = mapped_column(Float, nullable=True)
    timezone: Mapped[str] = mapped_column(String(64))
    input: Mapped[Any] = mapped_column(JSONType)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_tick_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


schedules = ScheduleRecord.__table__
Index("ix_schedules_tenant_id", schedules.c.tenant, schedules.c.id)
Index("uq_schedules_tenant_name", schedules.c.tenant, schedules.c.name, unique=True)
Index(
    "ix_schedules_due",
    schedules.c.next_run_at,
    sqlite_where=text("enabled"),
    postgresql_where=text("enabled"),
)
