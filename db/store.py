"""The run store: the one interface the engine, both executors, the API and the CLI use.

``open_store(url)`` picks the implementation once: ``SqliteStore`` for the embedded
default, ``PostgresStore`` for production. Nothing outside those two knows which database
it has. Time that decides who may run what (lease and slot expiry, worker liveness, sweeps)
is the database's clock, never a process's own.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from db.database import Database

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
CLAIMABLE = ("queued", "running")
# Unfinished, yet holding no worker, lease, slot or thread: something else brings them back
# (a resume, an unpause, the sweeper's timer).
STOPPED = ("waiting", "paused", "sleeping")
RETRYABLE = ("failed", "timed_out", "cancelled")

Rows = Sequence[tuple[Table, dict[str, Any]]]


class LeaseLost(Exception):
    """The run's lease or step counter moved on: this holder must stop without writing."""


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
    trigger: dict[str, Any] | None = None  # who started it (DESIGN.md section 10)
    parent: tuple[uuid.UUID, int] | None = None  # a replay's source run and step
    cursor: Any = None  # where it starts (a replay: the checkpoint before its first step)
    # Runs its tenant may have in flight (TENANT_CONCURRENCY; a tenant's override wins):
    # created past it, the run is held in the database for its turn. None: never held.
    tenant_limit: int | None = None


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


@dataclass(slots=True)
class Claimed:
    """A run just claimed, with what its holder needs to carry it on."""

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
    history_bytes: int  # what the run's step rows keep so far (deltas and cursors)
    pause_requested: bool
    now: datetime  # the database's clock at the claim
    tenant: str = "default"


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
    delta: Any  # a JSON object, or its encoding (orjson.Fragment); None: nothing changed
    cursor: Any = None  # the cursor after the step (None on a run's last or failed step)
    next_node: str | None = None
    history_bytes: int = 0  # the bytes of delta and cursor, added to the run's total
    output: Any = None  # the stream events the node emitted (core/events.py), or None
    cached: bool = False  # exec's result came from the node cache

    @property
    def duration_ms(self) -> float:
        return (self.finished_at - self.started_at).total_seconds() * 1000


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
    leased_by: str | None  # the owner of a lease that has not expired, by the database's clock
    tenant: str = "default"


@dataclass(slots=True)
class Dispatch:
    id: uuid.UUID
    queue: str
    priority: int
    tenant: str


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
    alive: bool  # heartbeat inside its TTL, by the database's clock


ExtraRows = Callable[[uuid.UUID], Rows]


class RunStore(ABC):
    """Runs, steps, leases, slots, locks and the worker registry, on one database."""

    dialect: str
    multi_host: bool  # may processes on several machines share it?
    sa: Database  # the SQLAlchemy handle: migrations, keys and the audit log

    # --- runs: the API and the CLI --------------------------------------------------------

    @abstractmethod
    async def create(
        self,
        new: NewRun,
        idempotency: Idempotency | None = None,
        *,
        extra_rows: ExtraRows | None = None,
    ) -> tuple[Mapping[str, Any], bool]:
        """Insert a queued run; with a key seen before, that run instead (created=False).
        ``extra_rows(run_id)``: rows (an audit entry) committed in the run's transaction."""

    @abstractmethod
    async def get(
        self, run_id: uuid.UUID, *, tenant: str | None = None, principal: str | None = None
    ) -> Mapping[str, Any] | None:
        """The run, if it belongs to ``tenant`` and ``principal`` (None: any). The filter
        is in the query, so another tenant's run costs what an unknown id costs."""

    @abstractmethod
    async def version(self, run_id: uuid.UUID) -> tuple[int, str] | None:
        """(version, status): what a long poll compares."""

    @abstractmethod
    async def list(self, f: RunFilter) -> list[Mapping[str, Any]]: ...

    @abstractmethod
    async def steps(
        self, run_id: uuid.UUID, *, after: int = 0, limit: int | None = None, delta: bool = False
    ) -> list[Mapping[str, Any]]:
        """The run's steps with ``seq > after`` in seq order, at most ``limit`` of them;
        ``delta``: with each step's changes to the shared store."""

    @abstractmethod
    async def count_unfinished(self, tenant: str) -> int:
        """The tenant's runs that are queued or running (an index-only count)."""

    @abstractmethod
    async def cancel(self, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        """Cancel a queued, waiting, paused or sleeping run at once; flag a running one for
        its next checkpoint."""

    @abstractmethod
    async def pause(self, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        """Pause a queued run at once; flag a running one for its next checkpoint."""

    @abstractmethod
    async def unpause(self, run_id: uuid.UUID, *, dispatched: bool) -> Mapping[str, Any] | None:
        """Queue a paused run again (or drop a pause not yet taken); ``dispatched``: the
        caller hands it to an executor now, else the next sweep does."""

    @abstractmethod
    async def checkpoint_of(self, run_id: uuid.UUID) -> Mapping[str, Any] | None:
        """The run's checkpoint columns (status, version, seq, cursor, state, state_seq,
        input, deadline_at, created_at, error, retries, graph_hash): what control
        operations start from."""

    @abstractmethod
    async def transition(
        self,
        run_id: uuid.UUID,
        statuses: Sequence[str],
        values: Mapping[str, Any],
        *,
        version: int | None = None,
        dispatched: bool | None = None,
    ) -> Mapping[str, Any] | None:
        """Set ``values`` on the run if its status is one of ``statuses`` (and its version
        is ``version``); the run as it is then, or None when the condition failed.
        ``dispatched``: stamp that an executor was handed the run now (True) or that the
        next sweep should (False)."""

    @abstractmethod
    async def step_cursor(self, run_id: uuid.UUID, before_seq: int) -> tuple[int, Any]:
        """(seq, cursor) of the last succeeded step before ``before_seq``; (0, None) when
        there is none (the run's start)."""

    @abstractmethod
    async def due_timers(self, limit: int = 1000) -> tuple[list[Dispatch], list[uuid.UUID]]:
        """Wake the sleeping runs that are due (queued again, returned for dispatch) and end
        the waiting runs whose wait timed out (``timed_out``, their ids returned)."""

    @abstractmethod
    async def insert_rows(self, *rows: tuple[Table, dict[str, Any]]) -> None:
        """INSERT ``rows`` atomically (an audit entry), committed before this returns."""

    # --- the engine -----------------------------------------------------------------------

    @abstractmethod
    async def claim(self, run_id: uuid.UUID, owner: str, ttl: float) -> Claimed | None:
        """Take the run's lease if no live holder has it; count the delivery."""

    @abstractmethod
    async def checkpoint(
        self,
        run_id: uuid.UUID,
        owner: str,
        seq: int,
        ttl: float | None,
        step: StepRecord | None,
        run_values: dict[str, Any],
    ) -> str | None:
        """Commit one checkpoint fenced by ``seq`` and ``owner``, renewing the lease for
        ``ttl`` seconds (None: leave it); return what an operator asked for meanwhile
        (``"cancel"``, ``"pause"``) or None. Raises ``LeaseLost`` when the fence fails."""

    @abstractmethod
    async def deltas(
        self, run_id: uuid.UUID, after_seq: int, up_to: int | None = None
    ) -> list[dict | None]:
        """The deltas of the steps after ``after_seq`` (up to ``up_to``), in seq order."""

    @abstractmethod
    async def snapshot(self, run_id: uuid.UUID) -> tuple[Any, int] | None:
        """(state, state_seq): the run's last full snapshot of its shared store (state None:
        none yet) and the step it was taken after; None for an unknown run."""

    @abstractmethod
    async def release(self, run_id: uuid.UUID, owner: str) -> None: ...

    @abstractmethod
    async def leave(self, run_id: uuid.UUID, owner: str) -> None:
        """Hand a claimed run back untouched (this process lacks its flow version): queued
        again, unleased, the claim not counted as a delivery, offered again only later."""

    @abstractmethod
    async def renew(self, owner: str, ttl: float, run_ids: Collection[uuid.UUID]) -> int:
        """Extend the leases of the runs this holder is advancing right now."""

    # --- dispatch and the sweeper ---------------------------------------------------------

    @abstractmethod
    async def head(self, run_id: uuid.UUID) -> RunHead | None: ...

    @abstractmethod
    async def mark_dispatched(self, run_id: uuid.UUID) -> None: ...

    # --- tenant fairness: TENANT_CONCURRENCY runs in flight per tenant, the rest held -----

    @abstractmethod
    async def admit_held(self, tenant: str, default_limit: int) -> list[Dispatch]:
        """Release the tenant's held runs it has room for, by priority then age."""

    @abstractmethod
    async def held_tenants(self) -> list[str]:
        """The tenants that have runs held back."""

    @abstractmethod
    async def tenant_limit(self, tenant: str) -> Mapping[str, Any] | None:
        """The tenant's override of TENANT_CONCURRENCY (concurrency, updated_at,
        updated_by), or None."""

    @abstractmethod
    async def set_tenant_limit(self, tenant: str, concurrency: int | None, by: str) -> None:
        """Set the tenant's override; None removes it."""

    @abstractmethod
    async def tenant_load(self, tenant: str) -> tuple[int, int]:
        """The tenant's runs (in flight, held)."""

    # --- node result caching (nodes that opt in; Redis keeps them instead when it is up) --

    @abstractmethod
    async def cache_get(self, tenant: str, flow: str, node: str, key: str) -> tuple[bool, Any]:
        """(True, value) for an entry that has not expired; (False, None) otherwise."""

    @abstractmethod
    async def cache_put(
        self, tenant: str, flow: str, node: str, key: str, value: Any, ttl: float
    ) -> None: ...

    @abstractmethod
    async def cache_clear(self, tenant: str, flow: str, key: str | None = None) -> int:
        """Remove the flow's entries (only ``key``'s, if given); how many went."""

    @abstractmethod
    async def take_orphans(
        self, redispatch_after: float, *, everything: bool = False, limit: int = 1000
    ) -> list[Dispatch]:
        """Unfinished runs no live lease holds that need a (new) dispatch: an expired
        lease at once, an unleased run once its last dispatch is ``redispatch_after``
        seconds old (or at once with ``everything``). Marks them dispatched."""

    # --- per-flow concurrency slots -------------------------------------------------------

    @abstractmethod
    async def acquire_slot(
        self, flow: str, run_id: uuid.UUID, owner: str, limit: int, ttl: float
    ) -> bool: ...

    @abstractmethod
    async def release_slot(self, flow: str, run_id: uuid.UUID, owner: str) -> None: ...

    @abstractmethod
    async def renew_slots(self, owner: str, ttl: float, run_ids: Collection[uuid.UUID]) -> int:
        """Extend the slots held for these runs only: a slot whose release failed expires."""

    # --- the worker registry and named locks ----------------------------------------------

    @abstractmethod
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
    ) -> None: ...

    @abstractmethod
    async def forget_worker(self, worker_id: str) -> None: ...

    @abstractmethod
    async def prune_workers(self, older_than: float = 3600.0) -> None: ...

    @abstractmethod
    async def live_workers(self, *, include_dead: bool = False) -> list[LiveWorker]: ...

    @abstractmethod
    async def count_live_workers(self) -> tuple[int, int]:
        """(worker names, worker processes) with a heartbeat inside their TTL."""

    @abstractmethod
    async def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lock ``name``; False while another live holder has it."""

    @abstractmethod
    async def unlock(self, name: str, owner: str) -> None: ...

    # --- retention ------------------------------------------------------------------------

    @abstractmethod
    async def expired_runs(self, older_than: float, limit: int) -> list[tuple[uuid.UUID, int]]:
        """(id, seq) of up to ``limit`` finished runs that ended more than ``older_than``
        seconds ago by the database's clock, those that ended first first."""

    @abstractmethod
    async def purge_runs(self, run_ids: Collection[uuid.UUID], older_than: float) -> int:
        """In one transaction, delete those of ``run_ids`` that are still finished and that
        old, with their steps and idempotency keys (audit entries stay); return how many."""

    @abstractmethod
    async def purge_steps(self, run_id: uuid.UUID, up_to_seq: int, older_than: float) -> int:
        """Delete the steps up to ``up_to_seq`` of a run that is finished and that old: a
        long run's steps go a few thousand per transaction before the run itself."""

    # --- flows and upkeep -----------------------------------------------------------------

    @abstractmethod
    async def sync_flows(self, specs: list[tuple[str, str, str, str]]) -> None:
        """Record (name, version, graph hash, description) of every loaded flow, seen now
        (the database's clock): each process calls it at start and then periodically."""

    @abstractmethod
    async def flow_last_seen(self, name: str, version: str, graph_hash: str) -> datetime | None:
        """When some process last recorded this flow version as loaded; None: never."""

    @abstractmethod
    async def serialize(self, conn: AsyncConnection, name: str) -> None:
        """Within ``conn``'s write transaction (``sa.write()``), wait for every other
        transaction serialized on ``name``."""

    @abstractmethod
    async def now(self) -> datetime:
        """The database's clock."""

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


def open_store(url: str, *, pool_size: int = 10) -> RunStore:
    """The store for ``DATABASE_URL``: chosen here, once."""
    sa = Database(url, pool_size=pool_size)
    if sa.dialect == "sqlite":
        from db.sqlite_store import SqliteStore

        return SqliteStore(sa)
    from db.postgres_store import PostgresStore

    return PostgresStore(sa, pool_size=pool_size)
