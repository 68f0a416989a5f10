"""All configuration, read from the environment with the ``POCKETRUN_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalize_database_url(url: str) -> str:
    """Accept plain ``sqlite://`` and ``postgresql://`` URLs and pick the async driver."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url[len("postgres://") :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POCKETRUN_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///pocketrun.db"
    executor: Literal["local", "celery"] = "local"
    redis_url: str | None = None
    flows: str = ""
    examples: bool = False  # load the built-in example flows (`pocketrun dev` turns them on)
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1024 * 1024
    rate_limit: str | None = None
    admin_key: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_role_claim: str = "role"
    jwt_tenant_claim: str = "tenant"
    jwt_role_map: str | None = None
    # Security (issue 4): all optional, secure defaults.
    cors_origins: str = ""  # comma-separated; empty: no CORS, browsers stay same-origin
    auth_cache_ttl: float = Field(default=5.0, ge=0)  # bound on how late a revocation bites
    jwks_cache_ttl: float = Field(default=300.0, ge=0)
    jwt_leeway: float = Field(default=10.0, ge=0, le=300)
    max_query_bytes: int = Field(default=8192, ge=256)

    log_level: str = "INFO"
    log_json: bool = True
    log_access: bool = False  # one uvicorn access line per request (with its request_id)
    auto_migrate: bool = True
    worker_name: str | None = None
    concurrency: int = Field(default=8, ge=1, le=1024)
    # Threads a process may start to replace ones stuck in hung sync nodes; /readyz warns
    # at four fifths of it and fails at it.
    max_abandoned_threads: int = Field(default=256, ge=1)
    max_step_output_bytes: int = Field(default=1024 * 1024, ge=0)  # what emit() streams a step
    event_buffer: int = Field(default=1000, ge=10)  # events a slow subscriber may fall behind
    lease_ttl: float = Field(default=15.0, gt=0)
    sweep_interval: float = Field(default=2.0, gt=0)
    drain_grace: float = Field(default=20.0, ge=0)
    snapshot_every: int = Field(default=50, ge=1)
    max_store_bytes: int = 8 * 1024 * 1024
    wait_cap: float = Field(default=60.0, ge=0)
    inline_budget: float = Field(default=30.0, ge=0)
    idempotency_ttl: float = 24 * 3600.0
    # Admission (no tenant can crowd out another): slots one tenant may hold in a process
    # (default: all but a quarter of CONCURRENCY), unfinished runs one tenant may have
    # before new ones are refused with 429, and the highest priority a consumer may set.
    tenant_slots: int | None = Field(default=None, ge=1)
    # Runs one tenant may have in flight across all processes (a cross-tenant admin may set
    # another number per tenant); the rest wait in the database and go on in their turn.
    tenant_concurrency: int = Field(default=100, ge=1)
    tenant_max_unfinished: int = Field(default=1000, ge=1)
    priority_ceiling: int = Field(default=4, ge=0, le=9)
    max_deliveries: int = Field(default=20, ge=1)
    # A run whose (flow, version, graph hash) no live process has loaded for this many
    # seconds fails ``flow_changed``; until then processes that lack it leave it queued.
    flow_missing_grace: float = Field(default=600.0, ge=0)
    # Bounded history (issue 8): a run's step rows may keep this many bytes of deltas and
    # cursors; past it the run fails ``history_too_large``.
    max_history_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Finished runs, their steps and idempotency keys are deleted this many days after they
    # finished (fractions allowed); 0 keeps them forever. The audit log is never deleted.
    retention_days: float = Field(default=0.0, ge=0)
    retention_interval: float = Field(default=60.0, gt=0)  # seconds between retention passes
    retention_batch: int = Field(default=500, ge=1)  # runs deleted per transaction, at most
    retention_batch_steps: int = Field(default=2000, ge=1)  # step rows per transaction, about

    # Distributed execution (EXECUTOR=celery): see workers/celery_app.py.
    broker_url: str | None = None  # default: REDIS_URL

    # Node result caching: see workers/node_cache.py.
    cache_redis_url: str | None = None  # default: REDIS_URL (none: entries in the run store)
    time_slice: float = Field(default=5.0, gt=0)  # seconds one advance carries a run, then requeue
    task_soft_time_limit: float = Field(default=900.0, gt=0)  # caps one task: slice + last step
    task_time_limit_grace: float = Field(default=30.0, gt=0)  # hard kill this long after the soft
    visibility_timeout: float = Field(default=3600.0, gt=0)  # Redis broker: unacked redelivery
    redispatch_after: float = Field(default=60.0, gt=0)  # resend a never-claimed run's message
    throttle_delay: float = Field(default=1.0, ge=0)  # retry delay when the flow's slots are full
    worker_heartbeat: float = Field(default=2.0, gt=0)
    worker_ttl: float = Field(default=10.0, gt=0)  # a worker unseen this long is dead
    redis_store: bool = True  # keep live shared stores in Redis (the database stays the record)
    redis_store_ttl: float = Field(default=7 * 86400.0, gt=0)  # idle unfinished runs' keys
    redis_finished_ttl: float = Field(default=300.0, gt=0)  # finished runs' keys
    ready_min_workers: int = Field(default=0, ge=0)  # /readyz fails below this many live workers

    # The node catalog (nodes/catalog.py): the http_request node refuses private, loopback
    # and link-local addresses unless this is set; the llm_chat node's OpenAI-compatible API.
    http_allow_private: bool = False
    llm_base_url: str | None = None  # e.g. https://api.openai.com/v1
    llm_api_key: SecretStr | None = None

    # --- webhooks (workers/webhooks.py) ---------------------------------------------------
    webhook_allow_private: bool = False  # allow private, loopback and link-local targets
    webhook_retry_base: float = Field(default=5.0, gt=0)  # first retry; doubles, with jitter
    webhook_give_up: float = Field(default=86400.0, gt=0)  # then the delivery is failed
    webhook_timeout: float = Field(default=10.0, gt=0)  # one POST
    webhook_concurrency: int = Field(default=16, ge=1)  # POSTs in flight per process
    webhook_poll: float = Field(default=1.0, gt=0)  # how often an idle sender looks for work

    # --- schedules (workers/scheduler.py) -------------------------------------------------
    scheduler: bool = True  # this process fires due schedules (any number of processes may)
    schedule_poll: float = Field(default=1.0, gt=0)  # longest wait before looking again
    # A tick found later than this after the tick that followed it was missed (downtime):
    # the missed ticks fire once, together, and the schedule goes on from now.
    schedule_catch_up: float = Field(default=2.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_database_url(value)

    @property
    def slots_per_tenant(self) -> int:
        if self.tenant_slots is not None:
            return min(self.tenant_slots, self.concurrency)
        return max(1, self.concurrency - self.concurrency // 4)

    @property
    def flow_modules(self) -> list[str]:
        return [m.strip() for m in self.flows.split(",") if m.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
