"""The flow catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from api.authz import Permission, Requires
from api.deps import State
from api.schemas import FlowDetail, FlowPage
from api.serialize import flow_json
from core.jsonutil import dumps
from core.principal import Principal

CatalogReader = Annotated[Principal, Requires(Permission.flow_read)]

router = APIRouter(prefix="/v1/flows", tags=["flows"])


@router.get("", response_model=FlowPage, summary="List the registered flows")
async def list_flows(state: State, _: CatalogReader) -> Response:
    items = [flow_json(spec) for spec in state.registry.latest()]
    return Response(dumps({"items": items, "next_cursor": None}), media_type="application/json")


@router.get("/{flow}", response_model=FlowDetail, summary="One flow with its node graph")
async def get_flow(
    flow: str, state: State, _: CatalogReader, version: str | None = None
) -> Response:
    spec = state.registry.get(flow, version)
    return Response(dumps(flow_json(spec, detail=True)), media_type="application/json")
