"""Live workers, the runs they hold and the queue depth: ``GET /v1/workers``.

A worker's runs are listed only when the caller may see them (its tenant's, or all of them
for a cross-tenant admin); the others are counted, not named.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.authz import Permission, Requires, list_scope
from api.deps import app_state
from api.routing import LeanRoute
from api.serialize import json_response
from api.state import AppState
from core.ids import parse_uuid
from core.principal import Principal
from db.store import RunFilter

router = APIRouter(tags=["operations"], route_class=LeanRoute)
HEALTH_TIMEOUT = 3.0
LOCAL_RUNS = 100  # the running runs listed for the local executor's one worker
STARTED_AT = datetime.now(UTC)


class WorkerOut(BaseModel):
    id: str
    name: str
    hostname: str
    pid: int
    queues: list[str]
    running: list[str] = Field(description="Ids of the runs it executes that the caller may see")
    running_total: int = Field(description="Every run it executes now")
    started_at: datetime
    heartbeat_at: datetime


class WorkersOut(BaseModel):
    executor: str
    items: list[WorkerOut]
    queued: dict[str, int] | int | None = Field(
        description="Runs waiting for a worker: per queue (celery) or in all (local)"
    )
    in_flight: int | None = Field(description="Runs this API process executes (local)")


@router.get(
    "/v1/workers",
    operation_id="listWorkers",
    response_model=WorkersOut,
    summary="Live workers, what each one runs, and the queue depth",
)
async def list_workers(
    request: Request, principal: Annotated[Principal, Requires(Permission.worker_read)]
) -> Response:
    state = app_state(request)
    live = await state.store.live_workers()
    try:
        health = await asyncio.wait_for(state.executor.health(), HEALTH_TIMEOUT)
    except Exception:  # the queue depth is a nicety; the workers are the answer
        health = {}
    items = [
        {
            "id": w.id,
            "name": w.name,
            "hostname": w.hostname,
            "pid": w.pid,
            "queues": w.queues,
            "running": await _visible(state, principal, w.running),
            "running_total": len(w.running),
            "started_at": w.started_at,
            "heartbeat_at": w.heartbeat_at,
        }
        for w in live
    ]
    if not items and state.executor.name == "local" and health.get("worker"):
        items.append(await _this_process(state, principal, health))
    body: dict[str, Any] = {
        "executor": state.executor.name,
        "items": items,
        "queued": _queued(health.get("queued")),
        "in_flight": health.get("in_flight"),
    }
    return json_response(WorkersOut, body)


async def _this_process(
    state: AppState, principal: Principal, health: dict[str, Any]
) -> dict[str, Any]:
    """The local executor runs inside this API process: it is the one worker."""
    tenant, subject = list_scope(principal)
    running = await state.store.list(
        RunFilter(tenant=tenant, principal=subject, statuses=["running"], limit=LOCAL_RUNS)
    )
    now = datetime.now(UTC)
    return {
        "id": f"{health['worker']}/{os.getpid()}",
        "name": str(health["worker"]),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "queues": sorted({spec.queue for spec in state.registry.all()}),
        "running": [str(r["id"]) for r in running],
        "running_total": int(health.get("in_flight") or 0),
        "started_at": STARTED_AT,
        "heartbeat_at": now,
    }


def _queued(value: Any) -> dict[str, int] | int | None:
    if isinstance(value, dict):
        return {str(k): int(v) for k, v in value.items()}
    return int(value) if isinstance(value, int) else None


async def _visible(state: AppState, principal: Principal, run_ids: list[str]) -> list[str]:
    if principal.cross_tenant:
        return list(run_ids)
    tenant, subject = list_scope(principal)
    seen = []
    for text in run_ids:
        parsed: uuid.UUID | None = parse_uuid(text)
        if parsed is not None and await state.store.get(parsed, tenant=tenant, principal=subject):
            seen.append(text)
    return seen
