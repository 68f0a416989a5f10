"""A tenant's limit of runs in flight (``TENANT_CONCURRENCY``) and its load.

Operators, engineers and admins read their own tenant's; an admin sets (or resets) its
own tenant's limit, a cross-tenant admin any tenant's. Other tenants' are 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.authz import Permission, Requires
from api.deps import app_state
from api.openapi import errors
from api.routes.keys import TENANT_PATTERN
from api.routing import LeanRoute
from api.serialize import json_response
from core.errors import NotFound
from core.principal import Principal

router = APIRouter(prefix="/v1/tenants", tags=["tenants"], route_class=LeanRoute)

TenantPath = Annotated[str, Path(pattern=TENANT_PATTERN)]


class TenantLimitSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(ge=1, le=1_000_000, description="Runs in flight")


class TenantLimitOut(BaseModel):
    tenant: str
    concurrency: int = Field(description="Runs the tenant may have in flight")
    default: bool = Field(description="True: TENANT_CONCURRENCY; false: an admin's override")
    updated_at: datetime | None
    updated_by: str | None
    in_flight: int = Field(description="Its runs queued for an executor or running now")
    held: int = Field(description="Its queued runs waiting for its turn")


def _visible(principal: Principal, tenant: str) -> None:
    if not principal.cross_tenant and tenant != principal.tenant:
        raise NotFound(f"tenant '{tenant}' not found")


async def _limit_response(request: Request, tenant: str) -> Response:
    state = app_state(request)
    override = await state.store.tenant_limit(tenant)
    in_flight, held = await state.store.tenant_load(tenant)
    body = {
        "tenant": tenant,
        "concurrency": (override["concurrency"] if override else state.settings.tenant_concurrency),
        "default": override is None,
        "updated_at": override["updated_at"] if override else None,
        "updated_by": override["updated_by"] if override else None,
        "in_flight": in_flight,
        "held": held,
    }
    return json_response(TenantLimitOut, body)


@router.get(
    "/{tenant}/limits",
    operation_id="getTenantLimits",
    response_model=TenantLimitOut,
    responses=errors(404, 422),
    summary="A tenant's limit of runs in flight, and how many it has in flight and held",
)
async def get_tenant_limits(
    tenant: TenantPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.tenant_read)],
) -> Response:
    _visible(principal, tenant)
    return await _limit_response(request, tenant)


@router.put(
    "/{tenant}/limits",
    operation_id="setTenantLimits",
    response_model=TenantLimitOut,
    responses=errors(400, 403, 404, 415, 422),
    summary="Override TENANT_CONCURRENCY for one tenant (held runs go on within a sweep)",
)
async def set_tenant_limits(
    tenant: TenantPath,
    body: TenantLimitSet,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.tenant_limit)],
) -> Response:
    _visible(principal, tenant)
    await app_state(request).store.set_tenant_limit(tenant, body.concurrency, principal.subject)
    return await _limit_response(request, tenant)


@router.delete(
    "/{tenant}/limits",
    operation_id="resetTenantLimits",
    response_model=TenantLimitOut,
    responses=errors(403, 404, 422),
    summary="Remove a tenant's override: TENANT_CONCURRENCY applies again",
)
async def reset_tenant_limits(
    tenant: TenantPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.tenant_limit)],
) -> Response:
    _visible(principal, tenant)
    await app_state(request).store.set_tenant_limit(tenant, None, principal.subject)
    return await _limit_response(request, tenant)
