"""Outbound webhooks of a tenant: subscribe (the secret is shown once), list, disable,
delete, read the delivery log, replay one delivery. Sending is workers/webhooks.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.authz import Permission, Requires
from api.deps import app_state
from api.openapi import LOCATION, errors
from api.pagination import CURSOR_PATTERN, keyset_page, parse_cursor
from api.routing import LeanRoute
from api.serialize import json_response, page
from core.errors import InvalidInput, NotFound
from core.principal import Principal
from db import webhooks as sql
from nodes.net import PrivateAddress, public_address
from workers.webhooks import new_secret, subscriptions_changed

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=LeanRoute)

EventName = Literal["run.status", "run.waiting", "run.finished"]
IdPath = Annotated[uuid.UUID, Path()]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="An http(s) URL")
    events: list[EventName] = Field(min_length=1, max_length=10)
    flow: str | None = Field(default=None, max_length=100, description="Only this flow's runs")


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(strict=True)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    flow: str | None
    enabled: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_...: shown only in this response")


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    id: uuid.UUID
    delivery_id: uuid.UUID
    event: str
    delivery_status: str = Field(description="pending, delivered or failed")
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class AttemptPage(BaseModel):
    items: list[AttemptOut]
    next_cursor: str | None


class ReplayOut(BaseModel):
    delivery_id: uuid.UUID
    status: str


def _bad_url(msg: str) -> InvalidInput:
    error = {"loc": ["body", "url"], "path": "body.url", "msg": msg, "type": "invalid_url"}
    return InvalidInput(f"url: {msg}", errors=[error])


async def _check_url(request: Request, url: str) -> None:
    allow = app_state(request).settings.webhook_allow_private
    try:
        await asyncio.to_thread(public_address, url, allow_private=allow)
    except PrivateAddress as exc:
        message = str(exc).replace("HTTP_ALLOW", "WEBHOOK_ALLOW")
        raise _bad_url(message) from None
    except ValueError as exc:
        raise _bad_url(str(exc)) from None


async def _own(request: Request, principal: Principal, sub_id: uuid.UUID) -> dict[str, Any]:
    row = await sql.get_subscription(app_state(request).store, principal.tenant, sub_id)
    if row is None:
        raise NotFound(f"webhook '{sub_id}' not found")
    return row


@router.post(
    "",
    operation_id="createWebhook",
    response_model=WebhookCreated,
    status_code=201,
    responses={
        201: {"description": "The subscription and its secret", "headers": LOCATION},
        **errors(400, 403, 415, 422),
    },
    summary="Subscribe a URL to run events (the signing secret is shown once)",
)
async def create_webhook(
    body: WebhookCreate,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.webhook_manage)],
) -> Response:
    await _check_url(request, body.url)
    store = app_state(request).store
    events = sorted(set(body.events))
    row = await sql.create_subscription(
        store, principal.tenant, body.url, events, body.flow, new_secret(), principal.subject
    )
    subscriptions_changed(store)
    location = {"Location": f"/v1/webhooks/{row['id']}"}
    return json_response(WebhookCreated, row, 201, location)


@router.get(
    "",
    operation_id="listWebhooks",
    response_model=WebhookPage,
    responses=errors(422),
    summary="List the tenant's webhooks, oldest first",
)
async def list_webhooks(
    request: Request,
    principal: Annotated[Principal, Requires(Permission.webhook_read)],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Response:
    store = app_state(request).store
    rows = await sql.list_subscriptions(store, principal.tenant, parse_cursor(cursor), limit + 1)
    rows, next_cursor = keyset_page(rows, limit, "id")
    return json_response(WebhookPage, page(list(rows), next_cursor))


@router.get(
    "/{webhook_id}",
    operation_id="getWebhook",
    response_model=WebhookOut,
    responses=errors(404, 422),
    summary="One webhook",
)
async def get_webhook(
    webhook_id: IdPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.webhook_read)],
) -> Response:
    return json_response(WebhookOut, await _own(request, principal, webhook_id))


@router.patch(
    "/{webhook_id}",
    operation_id="updateWebhook",
    response_model=WebhookOut,
    responses=errors(400, 404, 415, 422),
    summary="Enable or disable a webhook",
)
async def update_webhook(
    webhook_id: IdPath,
    body: WebhookPatch,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.webhook_manage)],
) -> Response:
    store = app_state(request).store
    if not await sql.set_enabled(store, principal.tenant, webhook_id, body.enabled):
        raise NotFound(f"webhook '{webhook_id}' not found")
    subscriptions_changed(store)
    return json_response(WebhookOut, await _own(request, principal, webhook_id))


@router.delete(
    "/{webhook_id}",
    operation_id="deleteWebhook",
    status_code=204,
    responses=errors(404, 422),
    summary="Delete a webhook and its pending deliveries",
)
async def delete_webhook(
    webhook_id: IdPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.webhook_manage)],
) -> Response:
    if not await sql.delete_subscription(app_state(request).store, principal.tenant, webhook_id):
        raise NotFound(f"webhook '{webhook_id}' not found")
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    operation_id="listWebhookDeliveries",
    response_model=AttemptPage,
    responses=errors(404, 422),
    summary="The delivery log: every attempt, oldest first",
)
async def list_deliveries(
    webhook_id: IdPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.webhook_read)],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Response:
    await _own(request, principal, webhook_id)
    store = app_state(request).store
    rows = await sql.attempts(store, webhook_id, parse_cursor(cursor), limit + 1)
    rows, next_cursor = keyset_page(rows, limit, "id")
    return json_response(AttemptPage, page(list(rows), next_cursor))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    operation_id="replayWebhookDelivery",
    response_model=ReplayOut,
    status_code=202,
    responses=errors(404, 422),
    summary="Send one delivery again",
)
async def replay_delivery(
    webhook_id: IdPath,
    delivery_id: IdPath,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.webhook_manage)],
) -> Response:
    await _own(request, principal, webhook_id)
    if not await sql.replay(app_state(request).store, webhook_id, delivery_id):
        raise NotFound(f"delivery '{delivery_id}' not found")
    return json_response(ReplayOut, {"delivery_id": delivery_id, "status": "pending"}, 202)
