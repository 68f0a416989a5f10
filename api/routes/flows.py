"""The flow catalog."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import CurrentPrincipal, State
from api.schemas import FlowDetail, FlowPage
from api.serialize import flow_json
from core.jsonutil import dumps

router = APIRouter(prefix="/v1/flows", tags=["flows"])


@router.get("", response_model=FlowPage, summary="List the registered flows")
async def list_flows(state: State, _: CurrentPrincipal) -> Response:
    items = [flow_json(spec) for spec in state.registry.latest()]
    return Response(dumps({"items": items, "next_cursor": None}), media_type="application/json")


@router.get("/{flow}", response_model=FlowDetail, summary="One flow with its node graph")
async def get_flow(
    flow: str, state: State, _: CurrentPrincipal, version: str | None = None
) -> Response:
    spec = state.registry.get(flow, version)
    return Response(dumps(flow_json(spec, detail=True)), media_type="application/json")
