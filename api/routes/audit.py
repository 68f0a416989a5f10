"""The audit log, for admins: newest first, paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api.authz import Permission, Requires, tenant_scope
from api.pagination import parse_cursor
from api.schemas import Problem
from core.jsonutil import dumps
from core.principal import Principal

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditOut(BaseModel):
    id: str
    at: datetime
    tenant: str
    principal: str
    role: str
    action: str
    target: str | None
    status: int
    request_id: str | None
    detail: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


def audit_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "at": row["at"],
        "tenant": row["tenant"],
        "principal": row["principal"],
        "role": row["role"],
        "action": row["action"],
        "target": row["target"],
        "status": row["status"],
        "request_id": row["request_id"],
        "detail": row["detail"],
    }


@router.get(
    "",
    response_model=AuditPage,
    responses={code: {"model": Problem} for code in (422,)},
    summary="The audit log of mutating calls, newest first",
)
async def list_audit(
    request: Request,
    principal: Annotated[Principal, Requires(Permission.audit_read)],
    action: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    before = parse_cursor(cursor)
    rows = await request.app.state.security.audit.list(
        tenant_scope(principal), action=action, limit=limit + 1, before_id=before
    )
    more = len(rows) > limit
    rows = rows[:limit]
    body = {
        "items": [audit_json(r) for r in rows],
        "next_cursor": str(rows[-1]["id"]) if more else None,
    }
    return Response(dumps(body), media_type="application/json")
