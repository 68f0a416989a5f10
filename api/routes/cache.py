"""Invalidating node results kept by the node cache (``workers.node_cache``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.authz import Permission, Requires
from api.deps import app_state
from api.openapi import errors
from api.routes.keys import TENANT_PATTERN
from api.routes.runs import FLOW_NAME
from api.routing import LeanRoute
from api.serialize import json_response
from core.errors import NotFound
from core.principal import Principal

router = APIRouter(prefix="/v1/cache", tags=["cache"], route_class=LeanRoute)


class CacheCleared(BaseModel):
    removed: int = Field(description="Entries removed")


@router.delete(
    "",
    operation_id="clearNodeCache",
    response_model=CacheCleared,
    responses=errors(403, 404, 422),
    summary="Drop the node cache's entries of a flow, or of one key of it",
)
async def clear_node_cache(
    request: Request,
    principal: Annotated[Principal, Requires(Permission.cache_clear)],
    flow: Annotated[str, Query(max_length=100, pattern=FLOW_NAME)],
    key: Annotated[
        str | None,
        Query(
            max_length=2000,
            pattern=r"^[^\x00]*$",
            description="A node's cache_key (default: prep_res as JSON)",
        ),
    ] = None,
    tenant: Annotated[
        str | None, Query(pattern=TENANT_PATTERN, description="Cross-tenant admins only")
    ] = None,
) -> Response:
    state = app_state(request)
    if tenant is not None and tenant != principal.tenant and not principal.cross_tenant:
        raise NotFound(f"tenant '{tenant}' not found")
    cache = state.executor.engine.cache
    removed = await cache.clear(state.store, tenant or principal.tenant, flow, key)
    return json_response(CacheCleared, {"removed": removed})
