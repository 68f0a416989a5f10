"""The flow catalog."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.authz import Permission, Requires, allowed
from api.deps import app_state
from api.openapi import errors
from api.routing import LeanRoute
from api.schemas import FlowDetail, FlowPage
from api.serialize import flow_data, json_response, page
from core.principal import Principal
from flows.registry import FlowSpec, Registry

CatalogReader = Annotated[Principal, Requires(Permission.flow_read)]

router = APIRouter(prefix="/v1/flows", tags=["flows"], route_class=LeanRoute)


@router.get(
    "",
    operation_id="listFlows",
    response_model=FlowPage,
    summary="List the registered flows, each loaded version",
)
async def list_flows(request: Request, _: CatalogReader) -> Response:
    items = [flow_data(spec) for spec in app_state(request).registry.all()]
    return json_response(FlowPage, page(items))


@router.get(
    "/{flow}",
    operation_id="getFlow",
    response_model=FlowDetail,
    responses=errors(404, 422),
    summary="One flow (the highest version, or ?version=) with its node graph and versions",
)
async def get_flow(
    flow: str, request: Request, principal: CatalogReader, version: str | None = None
) -> Response:
    await request.app.state.declared_flows.knows(flow)  # posted since this process started?
    registry = app_state(request).registry
    spec = registry.get(flow, version)
    internals = allowed(principal, Permission.flow_internals)
    return json_response(FlowDetail, flow_detail(registry, spec, internals=internals))


def flow_detail(registry: Registry, spec: FlowSpec, *, internals: bool) -> dict[str, Any]:
    """One flow version with its graph, and every version of its name loaded here."""
    body = flow_data(spec, detail=True, internals=internals)
    body["versions"] = [
        {"version": s.version, "graph_hash": s.graph_hash, "description": s.description}
        for s in registry.versions(spec.name)
    ]
    return body
