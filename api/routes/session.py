"""Who the caller is and what it may do: ``GET /v1/me`` (the dashboard hides what it can't)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.authz import ROLE_PERMISSIONS, Permission, Requires
from api.routing import LeanRoute
from api.serialize import json_response
from core.principal import Principal

router = APIRouter(tags=["session"], route_class=LeanRoute)


class SessionOut(BaseModel):
    subject: str = Field(description="`key:<id>` for an API key, the JWT's subject otherwise")
    tenant: str = Field(description="`*`: a cross-tenant admin")
    role: str
    cross_tenant: bool
    permissions: list[str] = Field(description="What this caller may do, e.g. `runs:retry`")


@router.get(
    "/v1/me",
    operation_id="getSession",
    response_model=SessionOut,
    summary="The caller: subject, tenant, role and permissions",
)
async def get_session(
    principal: Annotated[Principal, Requires(Permission.session_read)],
) -> Response:
    permissions = sorted(p.value for p in ROLE_PERMISSIONS[principal.role])
    body = {
        "subject": principal.subject,
        "tenant": principal.tenant,
        "role": principal.role.value,
        "cross_tenant": principal.cross_tenant,
        "permissions": permissions,
    }
    return json_response(SessionOut, body)
