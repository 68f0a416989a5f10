"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import State
from core.jsonutil import dumps

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz", summary="Readiness: database and executor")
async def readyz(state: State) -> Response:
    checks: dict[str, object] = {}
    ready = True
    try:
        await asyncio.wait_for(state.store.ping(), 3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        ready = False
    try:
        executor = await asyncio.wait_for(state.executor.health(), 3)
        checks["executor"] = executor
        ready = ready and executor.get("ready", True)
    except Exception as exc:
        checks["executor"] = f"error: {type(exc).__name__}"
        ready = False
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return Response(dumps(body), status_code=200 if ready else 503, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
