"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import app_state
from api.openapi import errors
from api.problems import problem
from api.routing import LeanRoute
from api.schemas import Health, Readiness
from api.serialize import json_body, json_response

router = APIRouter(tags=["health"], route_class=LeanRoute)
_OK = json_body(Health, {"status": "ok"})
PRIVATE_CHECKS = frozenset({"worker"})


@router.get("/healthz", operation_id="healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Readiness,
    responses=errors(503, descriptions={503: "Not ready; `checks` says what failed"}),
    summary="Readiness: database and executor",
)
async def readyz(request: Request) -> Response:
    state = app_state(request)
    checks: dict[str, object] = {}
    failed: list[str] = []
    try:
        await asyncio.wait_for(state.store.ping(), 3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        failed.append("database")
    try:
        executor = await asyncio.wait_for(state.executor.health(), 3)
        # Open to anyone: no worker names here (they carry host names), counts only.
        checks["executor"] = {k: v for k, v in executor.items() if k not in PRIVATE_CHECKS}
        if not executor.get("ready", True):
            failed.append("executor")
    except Exception as exc:
        checks["executor"] = f"error: {type(exc).__name__}"
        failed.append("executor")
    if not failed:
        return json_response(Readiness, {"status": "ready", "checks": checks})
    detail = f"not ready: {', '.join(failed)}"
    return problem(503, detail, type_="not-ready", extensions={"checks": checks})


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format (version 0.0.4)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    summary="Prometheus metrics",
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
