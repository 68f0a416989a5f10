"""API keys, for admins: create (shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.authz import Permission, Requires, tenant_scope
from api.deps import security_state
from api.openapi import LOCATION, errors
from api.pagination import keyset_page
from api.routing import LeanRoute
from api.schemas import Moment, StoredText
from api.serialize import json_response, page
from core.errors import Forbidden, InvalidInput, NotFound
from core.principal import ALL_TENANTS, Principal, Role
from db.keys import NewKey
from db.types import utcnow

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=LeanRoute)
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class KeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"not": {"required": ["expires_at", "expires_in"]}},
    )

    name: StoredText = Field(min_length=1, max_length=200)
    role: Role
    tenant: str | None = Field(
        default=None, pattern=TENANT_PATTERN, description="Default: the caller's tenant"
    )
    expires_at: Moment | None = Field(default=None, description="With its offset")
    expires_in: float | None = Field(
        default=None, gt=0, le=10 * 365 * 86400, strict=True, description="Seconds from now"
    )


class KeyOut(BaseModel):
    id: str
    prefix: str
    name: str
    tenant: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown only in this response")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


def key_data(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "prefix": row["prefix"],
        "name": row["name"],
        "tenant": row["tenant"],
        "role": row["role"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
    }


@router.post(
    "",
    operation_id="createKey",
    response_model=KeyCreated,
    status_code=201,
    responses={
        201: {"description": "The key, shown this once", "headers": LOCATION},
        **errors(400, 403, 415, 422),
    },
    summary="Create an API key (the key is shown once)",
)
async def create_key(
    body: KeyCreate,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.key_create)],
) -> Response:
    tenant = body.tenant or principal.tenant
    if tenant == ALL_TENANTS:
        raise Forbidden("keys for tenant '*' are made with the CLI only")
    if not principal.cross_tenant and tenant != principal.tenant:
        raise Forbidden("an admin makes keys in its own tenant only")
    if {"expires_at", "expires_in"} <= body.model_fields_set:
        raise InvalidInput("give expires_at or expires_in, not both")
    expires = body.expires_at
    if body.expires_in is not None:
        expires = utcnow() + timedelta(seconds=body.expires_in)
    if expires is not None and expires.tzinfo is None:
        raise InvalidInput("expires_at needs a timezone")
    security = security_state(request)
    row, key = await security.keys.create(
        NewKey(
            name=body.name,
            tenant=tenant,
            role=body.role,
            created_by=principal.subject,
            expires_at=expires,
        )
    )
    security.authenticator.keys.created(key)
    location = {"Location": f"/v1/keys/{row['id']}"}
    return json_response(KeyCreated, {**key_data(row), "key": key}, 201, location)


@router.get(
    "",
    operation_id="listKeys",
    response_model=KeyPage,
    responses=errors(422),
    summary="List API keys, newest first",
)
async def list_keys(
    request: Request,
    principal: Annotated[Principal, Requires(Permission.key_read)],
    tenant: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    scope = tenant_scope(principal)
    if scope is None:
        scope = tenant
    elif tenant is not None and tenant != scope:
        return json_response(KeyPage, page([]))
    rows = await security_state(request).keys.list(scope, limit=limit + 1, before_id=cursor)
    rows, next_cursor = keyset_page(rows, limit, "id")
    return json_response(KeyPage, page([key_data(r) for r in rows], next_cursor))


@router.delete(
    "/{key_id}",
    operation_id="revokeKey",
    response_model=KeyOut,
    responses=errors(404, 422),
    summary="Revoke an API key (at once in this process, within AUTH_CACHE_TTL elsewhere)",
)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=32)],
    request: Request,
    principal: Annotated[Principal, Requires(Permission.key_revoke)],
) -> Response:
    security = security_state(request)
    row = await security.keys.get(key_id)
    scope = tenant_scope(principal)
    if row is None or (scope is not None and row["tenant"] != scope):
        raise NotFound(f"key '{key_id}' not found")
    row = await security.keys.revoke(key_id) or row
    security.authenticator.keys.invalidate(key_id)
    return json_response(KeyOut, key_data(row))
