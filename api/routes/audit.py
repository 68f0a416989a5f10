"""The audit log, for admins: newest first, paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api.authz import Permission, Requires, tenant_scope
from api.deps import security_state
from api.openapi import errors
from api.pagination import CURSOR_PATTERN, keyset_page, parse_cursor
from api.routing import LeanRoute
from api.serialize import json_response, page
from core.principal import Principal

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=LeanRoute)


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


def audit_data(row: Any) -> dict[str, Any]:
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
    operation_id="listAudit",
    response_model=AuditPage,
    responses=errors(422),
    summary="The audit log of mutating calls, newest first",
)
async def list_audit(
    request: Request,
    principal: Annotated[Principal, Requires(Permission.audit_read)],
    action: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100, pattern=CURSOR_PATTERN)] = None,
) -> Response:
    before = parse_cursor(cursor)
    rows = await security_state(request).audit.list(
        tenant_scope(principal), action=action, limit=limit + 1, before_id=before
    )
    rows, next_cursor = keyset_page(rows, limit, "id")
    return json_response(AuditPage, page([audit_data(r) for r in rows], next_cursor))
