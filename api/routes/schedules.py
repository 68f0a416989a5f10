"""Schedules by API (DESIGN.md section 10): create, list, read, change, delete. Firing is
workers/scheduler.py, in every API and worker process."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.authz import Permission, Requires
from api.deps import app_state
from api.openapi import LOCATION, errors
from api.pagination import CURSOR_PATTERN, keyset_page, parse_cursor
from api.routing import LeanRoute
from api.schedule_definitions import checked_input, flow_of, new_schedule, timing_problems
from api.serialize import json_response, page
from core.cron import first_tick
from core.errors import InvalidInput, NotFound
from core.principal import Principal
from db import schedules as sql

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], route_class=LeanRoute)

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$"
FLOW_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
TIMING = ("cron", "every", "timezone")
IdPath = Annotated[uuid.UUID, Path()]
Cron = Annotated[str, Field(min_length=1, max_length=200, examples=["*/5 * * * *"])]
Every = Annotated[float, Field(description="Seconds between ticks (at least 1)")]
Zone = Annotated[str, Field(min_length=1, max_length=64, description="An IANA time zone")]


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: str = Field(max_length=100, pattern=FLOW_NAME)
    version: str | None = Field(default=None, max_length=100, pattern=FLOW_NAME)
    cron: Cron | None = None
    every: Every | None = None
    timezone: Zone = "UTC"
    input: dict[str, Any] = Field(default_factory=dict, description="The runs' input")
    enabled: bool = Field(default=True, strict=True)
    name: str | None = Field(default=None, max_length=200, pattern=NAME)


class SchedulePatch(BaseModel):
    """Fields to change; a changed timing, or enabling, counts the next tick from now."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(default=None, strict=True)
    cron: Cron | None = None
    every: Every | None = None
    timezone: Zone | None = None
    input: dict[str, Any] | None = None
    version: str | None = Field(default=None, max_length=100, pattern=FLOW_NAME)


class ScheduleOut(BaseModel):
    id: uuid.UUID
    name: str | None
    flow: str
    version: str | None
    cron: str | None
    every: float | None
    timezone: str
    input: dict[str, Any]
    enabled: bool
    next_run_at: datetime = Field(description="The next tick")
    last_tick_at: datetime | None
    last_run_id: uuid.UUID | None
    last_error: str | None = Field(description="Why the last tick started no run")
    created_at: datetime
    created_by: str
    updated_at: datetime


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


async def _own(request: Request, principal: Principal, schedule_id: uuid.UUID) -> dict[str, Any]:
    row = await sql.get(app_state(request).store, principal.tenant, schedule_id)
    if row is None:
        raise NotFound(f"schedule '{schedule_id}' not found")
    return row


def _woken(request: Request) -> None:
    scheduler = app_state(request).scheduler
    if scheduler is not None:
        scheduler.wake()


@router.post(
    "",
    operation_id="createSchedule",
    response_model=ScheduleOut,
    status_code=201,
    responses={
        201: {"description": "The schedule and its next tick", "headers": LOCATION},
        **errors(400, 409, 415, 422),
    },
    summary="Start runs of a flow on a cron or interval schedule",
)
async def create_schedule(
    body: ScheduleCreate,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.schedule_manage)],
) -> Response:
    await request.app.state.declared_flows.knows(body.flow)  # posted since this process began?
    store = app_state(request).store
    fields = body.model_dump()
    row = new_schedule(
        app_state(request).registry,
        fields,
        tenant=principal.tenant,
        by=principal.subject,
        now=await store.now(),
    )
    created = await sql.create(store, row)
    _woken(request)
    location = {"Location": f"/v1/schedules/{row['id']}"}
    return json_response(ScheduleOut, created, 201, location)


@router.get(
    "",
    operation_id="listSchedules",
    response_model=SchedulePage,
    responses=errors(422),
    summary="The tenant's schedules, oldest first",
)
async def list_schedules(
    request: Request,
    principal: Annotated[Principal, Requires(Permission.schedule_read)],
    flow: Annotated[str | None, Query(max_length=100, pattern=FLOW_NAME)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=100, pattern=CURSOR_PATTERN)] = None,
) -> Response:
    store = app_state(request).store
    rows = await sql.list_page(store, principal.tenant, parse_cursor(cursor), limit + 1, flow)
    rows, next_cursor = keyset_page(rows, limit, "id")
    return json_response(SchedulePage, page(list(rows), next_cursor))


@router.get(
    "/{schedule_id}",
    operation_id="getSchedule",
    response_model=ScheduleOut,
    responses=errors(404, 422),
    summary="One schedule",
)
async def get_schedule(
    schedule_id: IdPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.schedule_read)],
) -> Response:
    return json_response(ScheduleOut, await _own(request, principal, schedule_id))


@router.patch(
    "/{schedule_id}",
    operation_id="updateSchedule",
    response_model=ScheduleOut,
    responses=errors(400, 404, 415, 422),
    summary="Enable, disable or change a schedule",
)
async def update_schedule(
    schedule_id: IdPath,
    body: SchedulePatch,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.schedule_manage)],
) -> Response:
    current = await _own(request, principal, schedule_id)
    asked = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k in ("cron", "every", "version")  # null: none (latest version)
    }
    if asked.get("cron") is not None:
        asked.setdefault("every", None)  # one timing replaces the other
    if asked.get("every") is not None:
        asked.setdefault("cron", None)
    merged = {**current, **asked}
    if problems := timing_problems(merged["cron"], merged["every"], merged["timezone"]):
        raise InvalidInput("the schedule's timing is not valid", errors=problems)
    if "input" in asked or "version" in asked:
        spec = flow_of(app_state(request).registry, current["flow"], merged["version"])
        checked_input(spec, merged["input"])
    values = {k: merged[k] for k in asked}
    store = app_state(request).store
    retimed = any(k in asked for k in TIMING)
    enabling = asked.get("enabled") is True and not current["enabled"]
    if retimed or enabling:
        now = await store.now()
        values["next_run_at"] = first_tick(merged["cron"], merged["every"], merged["timezone"], now)
    if values and not await sql.change(store, principal.tenant, schedule_id, values):
        raise NotFound(f"schedule '{schedule_id}' not found")
    _woken(request)
    return json_response(ScheduleOut, await _own(request, principal, schedule_id))


@router.delete(
    "/{schedule_id}",
    operation_id="deleteSchedule",
    status_code=204,
    responses=errors(404, 422),
    summary="Delete a schedule (the runs it started stay)",
)
async def delete_schedule(
    schedule_id: IdPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.schedule_manage)],
) -> Response:
    if not await sql.remove(app_state(request).store, principal.tenant, schedule_id):
        raise NotFound(f"schedule '{schedule_id}' not found")
    return Response(status_code=204)
