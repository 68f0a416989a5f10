"""What a schedule must be, checked the same way for the API and the CLI: 422s by field."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from api.problems import field_errors
from api.schemas import json_problems
from core.cron import cron_problem, every_problem, first_tick, timezone_problem
from core.errors import InvalidInput, NotFound
from core.ids import uuid7
from flows.registry import FlowSpec, Registry


def _problem(field: str, msg: str, type_: str) -> dict[str, Any]:
    return {"loc": ["body", field], "path": f"body.{field}", "msg": msg, "type": type_}


def timing_problems(cron: str | None, every: float | None, timezone: str) -> list[dict]:
    problems = []
    if (cron is None) == (every is None):
        problems.append(_problem("cron", "give exactly one of cron and every", "schedule_timing"))
    if cron is not None and (msg := cron_problem(cron)):
        problems.append(_problem("cron", msg, "invalid_cron"))
    if every is not None and (msg := every_problem(every)):
        problems.append(_problem("every", msg, "invalid_interval"))
    if msg := timezone_problem(timezone):
        problems.append(_problem("timezone", msg, "invalid_timezone"))
    return problems


def flow_of(registry: Registry, flow: str, version: str | None) -> FlowSpec:
    try:
        return registry.get(flow, version)
    except NotFound as exc:
        field = "version" if version is not None and "version" in exc.detail else "flow"
        problem = _problem(field, exc.detail, "unknown_flow")
        raise InvalidInput(exc.detail, errors=[problem]) from None


def checked_input(spec: FlowSpec, data: dict[str, Any]) -> dict[str, Any]:
    if problems := json_problems(data, ("body", "input")):
        raise InvalidInput("the input holds values JSON can't store", errors=problems)
    try:
        spec.validate_input(data)
    except ValidationError as exc:
        raise InvalidInput(
            "the input does not match the flow's schema",
            errors=field_errors(exc.errors(), ("body", "input")),
        ) from None
    return data


def new_schedule(
    registry: Registry,
    fields: Mapping[str, Any],
    *,
    tenant: str,
    by: str,
    now: datetime,
) -> dict[str, Any]:
    """The row of a new schedule from its fields (those of ``ScheduleCreate``)."""
    cron, every = fields.get("cron"), fields.get("every")
    timezone = fields.get("timezone") or "UTC"
    if problems := timing_problems(cron, every, timezone):
        raise InvalidInput("the schedule's timing is not valid", errors=problems)
    spec = flow_of(registry, fields["flow"], fields.get("version"))
    schedule_id: uuid.UUID = uuid7()
    return {
        "id": schedule_id,
        "tenant": tenant,
        "name": fields.get("name"),
        "flow": spec.name,
        "version": fields.get("version"),
        "cron": cron,
        "every": every,
        "timezone": timezone,
        "input": checked_input(spec, dict(fields.get("input") or {})),
        "enabled": fields.get("enabled", True),
        "next_run_at": first_tick(cron, every, timezone, now),
        "created_at": now,
        "created_by": by,
        "updated_at": now,
    }
