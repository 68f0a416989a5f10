"""The node catalog and declarative flows: ``GET /v1/nodes``, ``POST /v1/flows``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.authz import Permission, Requires
from api.deps import app_state
from api.openapi import LOCATION, errors
from api.problems import is_json_media
from api.routes.flows import flow_detail
from api.routing import LeanRoute
from api.schemas import FlowDetail, NodePage
from api.serialize import json_response, page
from core.errors import Conflict, FlowDefinitionError, PocketrunError
from core.principal import Principal
from db.declared_flows import DeclaredFlowRepository, same_document
from flows.declarative import FlowDocument, parse_document, register_document
from flows.documents import parse_text
from flows.registry import Registry
from nodes.catalog import CATALOG
from workers.declared import DeclaredFlows

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


class UnsupportedMedia(PocketrunError):
    status, type, title = 415, "unsupported-media-type", "Unsupported media type"


router = APIRouter(tags=["flows"], route_class=LeanRoute)


def declared(request: Request) -> DeclaredFlows:
    return request.app.state.declared_flows


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its ``$defs`` written in place (OpenAPI has no ``$defs`` here)."""
    defs = schema.pop("$defs", {})

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(schema)


_DOCUMENT_SCHEMA = _inline(FlowDocument.model_json_schema(by_alias=True))


@router.get(
    "/v1/nodes",
    operation_id="listNodeTypes",
    response_model=NodePage,
    summary="The node catalog: node types, their params and actions",
)
async def list_nodes(_: Annotated[Principal, Requires(Permission.flow_read)]) -> Response:
    return json_response(NodePage, page([entry.describe() for entry in CATALOG.all()]))


def _with_body_loc(exc: PocketrunError) -> PocketrunError:
    for error in exc.errors or []:
        error["loc"] = ["body", *error["loc"]]
        error["path"] = ".".join(str(p) for p in error["loc"])
    return exc


@router.post(
    "/v1/flows",
    operation_id="registerFlow",
    response_model=FlowDetail,
    status_code=201,
    responses={
        201: {"description": "Registered", "headers": LOCATION},
        200: {"model": FlowDetail, "description": "Already registered with this document"},
        **errors(
            409,
            415,
            422,
            descriptions={409: "This name and version hold a different flow"},
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _DOCUMENT_SCHEMA},
                "application/yaml": {"schema": _DOCUMENT_SCHEMA},
            },
        }
    },
    summary="Register a declarative flow made of catalog nodes (JSON or YAML)",
)
async def register_flow(
    request: Request, principal: Annotated[Principal, Requires(Permission.flow_register)]
) -> Response:
    content_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    yaml_body = content_type in YAML_TYPES
    if not yaml_body and not is_json_media(content_type):
        raise UnsupportedMedia("a flow document is application/json or application/yaml")
    data = parse_text(await request.body(), yaml_text=yaml_body)
    state = app_state(request)
    try:
        doc = parse_document(data)
    except FlowDefinitionError as exc:
        raise _with_body_loc(exc) from None
    loader = declared(request)
    await loader.refresh()  # what other processes registered: a clash must be seen
    repo = DeclaredFlowRepository(state.store)
    stored = await repo.get(doc.name, doc.version)
    if stored is None and state.registry.find(doc.name, doc.version) is not None:
        raise Conflict(
            f"flow '{doc.name}' version {doc.version} is already registered by code; "
            "post another version"
        )
    if stored is not None:
        if not same_document(stored["document"], data):
            raise Conflict(
                f"flow '{doc.name}' version {doc.version} is registered with another "
                "document; post it under a new version"
            )
        spec = await loader.find(doc.name, doc.version)
        if spec is None:  # stored, yet not loadable here (e.g. a sub-flow this lacks)
            raise Conflict(f"flow '{doc.name}' version {doc.version} can't be loaded here")
        return json_response(FlowDetail, flow_detail(state.registry, spec, internals=True))
    # Compile into a scratch registry first: a bad document is never stored.
    try:
        register_document(data, registry=Registry(), origin="POST /v1/flows")
    except FlowDefinitionError as exc:
        raise _with_body_loc(exc) from None
    row, created = await repo.add(doc.name, doc.version, data, principal.subject)
    if not created and not same_document(row["document"], data):
        raise Conflict(
            f"flow '{doc.name}' version {doc.version} was just registered with another document"
        )
    spec = await loader.find(doc.name, doc.version)
    if spec is None:
        raise FlowDefinitionError(f"flow '{doc.name}' version {doc.version} did not load")
    headers = {"Location": f"/v1/flows/{spec.name}?version={spec.version}"}
    return json_response(
        FlowDetail,
        flow_detail(state.registry, spec, internals=True),
        status=201 if created else 200,
        headers=headers,
    )
