"""API keys, for admins: create (shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.authz import Permission, Requires, tenant_scope
from api.schemas import Problem
from core.errors import Forbidden, InvalidInput, NotFound
from core.jsonutil import dumps
from core.principal import ALL_TENANTS, Principal, Role
from db.keys import NewKey
from db.types import utcnow

router = APIRouter(prefix="/v1/keys", tags=["keys"])
JSON = "application/json"
ERRORS = {code: {"model": Problem} for code in (404, 413, 422)}
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Role
    tenant: str | None = Field(
        default=None, pattern=TENANT_PATTERN, description="Default: the caller's tenant"
    )
    expires_at: datetime | None = None
    expires_in: float | None = Field(
        default=None, gt=0, le=10 * 365 * 86400, description="Seconds from now"
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


def key_json(row: Any) -> dict[str, Any]:
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


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type=JSON, headers=headers)


@router.post(
    "",
    response_model=KeyCreated,
    status_code=201,
    responses={403: {"model": Problem}, **ERRORS},
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
    if body.expires_at is not None and body.expires_in is not None:
        raise InvalidInput("give expires_at or expires_in, not both")
    expires = body.expires_at
    if body.expires_in is not None:
        expires = utcnow() + timedelta(seconds=body.expires_in)
    if expires is not None and expires.tzinfo is None:
        raise InvalidInput("expires_at needs a timezone")
    security = request.app.state.security
    row, key = await security.keys.create(
        NewKey(
            name=body.name,
            tenant=tenant,
            role=body.role,
            created_by=principal.subject,
            expires_at=expires,
        )
    )
    return _json({**key_json(row), "key": key}, 201, {"Location": f"/v1/keys/{row['id']}"})


@router.get("", response_model=KeyPage, responses=ERRORS, summary="List API keys, newest first")
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
        return _json({"items": [], "next_cursor": None})
    rows = await request.app.state.security.keys.list(scope, limit=limit + 1, before_id=cursor)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = rows[-1]["id"] if more else None
    return _json({"items": [key_json(r) for r in rows], "next_cursor": next_cursor})


@router.delete(
    "/{key_id}",
    response_model=KeyOut,
    responses=ERRORS,
    summary="Revoke an API key (at once in this process, within AUTH_CACHE_TTL elsewhere)",
)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=32)],
    request: Request,
    principal: Annotated[Principal, Requires(Permission.key_revoke)],
) -> Response:
    security = request.app.state.security
    row = await security.keys.get(key_id)
    scope = tenant_scope(principal)
    if row is None or (scope is not None and row["tenant"] != scope):
        raise NotFound(f"key '{key_id}' not found")
    row = await security.keys.revoke(key_id) or row
    security.authenticator.keys.invalidate(key_id)
    return _json(key_json(row))
