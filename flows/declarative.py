"""Declarative flows: a flow made of catalog nodes, as a JSON or YAML document.

``{"name", "version", "input_schema"?, "start", "nodes": {"<id>": {"type", "params"}},
"edges": [{"from", "to", "action"?}]}`` compiles into a PocketFlow Flow whose node ids are
the document's ids, and registers through ``flows.registry.register`` like a coded flow.
Every problem is reported at once as a FlowDefinitionError whose ``errors`` carry field
paths (``nodes.fetch.params.url``, ``edges.2.to``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pocketflow import AsyncFlow, BaseNode, Flow, Node
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

import flows.subflow  # noqa: F401  (registers the subflow node type)
import nodes.stock  # noqa: F401  (registers the built-in node types)
from core.errors import FlowDefinitionError, PocketrunError
from flows.compiler import ASYNC_KINDS, kind_of
from flows.registry import FlowSpec, Registry, register
from nodes.catalog import CATALOG, CatalogEntry

NODE_ID = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"
_NODE_ID = re.compile(NODE_ID)


class NodeDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="A node type of GET /v1/nodes")
    params: dict[str, Any] = Field(default_factory=dict)
    max_retries: int = Field(default=1, ge=1, le=100)
    wait: float = Field(default=0, ge=0, le=3600)


class EdgeDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    action: str = Field(default="default", min_length=1, max_length=100)


class FlowDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    version: str = Field(default="1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description: str = Field(default="", max_length=2000)
    mode: Literal["inline", "background"] = "background"
    output: list[str] | None = None
    input_schema: dict[str, Any] | None = None
    start: str
    nodes: dict[str, NodeDocument] = Field(min_length=1)
    edges: list[EdgeDocument] = Field(default_factory=list)


def _error(loc: tuple, msg: str, type_: str = "flow_definition") -> dict[str, Any]:
    loc = list(loc)
    return {"loc": loc, "path": ".".join(str(p) for p in loc), "msg": msg, "type": type_}


def _raise(name: str, version: str, errors: list[dict[str, Any]]) -> None:
    if errors:
        shown = "; ".join(f"{e['path']}: {e['msg']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise FlowDefinitionError(f"flow '{name}' version {version}: {shown}{more}", errors=errors)


def parse_document(data: Any) -> FlowDocument:
    try:
        return FlowDocument.model_validate(data)
    except ValidationError as exc:
        name = data.get("name", "?") if isinstance(data, dict) else "?"
        version = data.get("version", "1") if isinstance(data, dict) else "?"
        errors = [_error(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
        _raise(str(name), str(version), errors)
        raise  # unreachable: there were errors


def schema_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model that validates with ``schema`` and documents itself as it."""
    validator = Draft202012Validator(schema)

    def check(cls: type[BaseModel], data: Any, handler: Callable[[Any], Any]) -> Any:
        problems = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.path])
        if problems:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("json_schema", e.message),
                        loc=tuple(e.absolute_path),
                        input=e.instance,
                    )
                    for e in problems
                ],
            )
        return handler(data)

    model = create_model(
        name,
        __config__=ConfigDict(extra="allow"),
        __validators__={"_json_schema": model_validator(mode="wrap")(classmethod(check))},
    )
    model.model_json_schema = classmethod(lambda cls, *a, **k: dict(schema))  # type: ignore[method-assign]
    return model


class _Planned:
    """One document node: its entry and validated (and resolved) params."""

    def __init__(self, node_id: str, doc: NodeDocument, entry: CatalogEntry, params: Any):
        self.id, self.doc, self.entry, self.params = node_id, doc, entry, params

    def build(self) -> BaseNode:
        node = self.entry.build(self.params)
        node.name = self.id  # type: ignore[attr-defined]
        if isinstance(node, Node):
            node.max_retries, node.wait = self.doc.max_retries, self.doc.wait
        return node


def _plan(doc: FlowDocument) -> dict[str, _Planned]:
    errors: list[dict[str, Any]] = []
    planned: dict[str, _Planned] = {}
    for node_id, node in doc.nodes.items():
        where = ("nodes", node_id)
        if not _NODE_ID.match(node_id):
            errors.append(_error(where, f"node id {node_id!r} must match {NODE_ID}"))
            continue
        entry = CATALOG.get(node.type)
        if entry is None:
            known = ", ".join(CATALOG.names())
            errors.append(_error((*where, "type"), f"unknown node type {node.type!r} ({known})"))
            continue
        try:
            params = entry.params.model_validate(node.params)
            if entry.resolve is not None:
                params = entry.resolve(params)
        except ValidationError as exc:
            errors.extend(
                _error((*where, "params", *e["loc"]), e["msg"], e["type"]) for e in exc.errors()
            )
            continue
        except ValueError as exc:
            errors.append(_error((*where, "params"), str(exc)))
            continue
        planned[node_id] = _Planned(node_id, node, entry, params)

    if doc.start not in doc.nodes:
        errors.append(_error(("start",), f"unknown node {doc.start!r}"))
    seen: dict[tuple[str, str], int] = {}
    for i, edge in enumerate(doc.edges):
        where = ("edges", i)
        label = f"edge {edge.from_} -> {edge.to}"
        for end, key in ((edge.from_, "from"), (edge.to, "to")):
            if end not in doc.nodes:
                errors.append(_error((*where, key), f"{label}: unknown node {end!r}"))
        if (edge.from_, edge.action) in seen:
            first = seen[(edge.from_, edge.action)]
            errors.append(
                _error(
                    (*where, "action"),
                    f"{label}: node {edge.from_!r} already has an edge for action "
                    f"{edge.action!r} (edges.{first})",
                )
            )
        seen.setdefault((edge.from_, edge.action), i)
        source = planned.get(edge.from_)
        if source is not None:
            allowed = source.entry.allowed_actions(source.params)
            if allowed is not None and edge.action not in allowed:
                errors.append(
                    _error(
                        (*where, "action"),
                        f"{label}: a {source.entry.name} node returns "
                        f"{', '.join(repr(a) for a in sorted(allowed))}, never {edge.action!r}",
                    )
                )
    if doc.input_schema is not None:
        try:
            Draft202012Validator.check_schema(doc.input_schema)
        except SchemaError as exc:
            errors.append(_error(("input_schema",), f"not a valid JSON Schema: {exc.message}"))
    if not errors:
        reachable, stack = set(), [doc.start]
        while stack:
            node_id = stack.pop()
            if node_id not in reachable:
                reachable.add(node_id)
                stack.extend(e.to for e in doc.edges if e.from_ == node_id)
        errors.extend(
            _error(("nodes", node_id), f"node {node_id!r} can't be reached from {doc.start!r}")
            for node_id in doc.nodes
            if node_id not in reachable
        )
    _raise(doc.name, doc.version, errors)
    return planned


def builder(doc: FlowDocument) -> Callable[[], Flow]:
    """The flow factory for a valid document: a fresh graph on every call."""
    planned = _plan(doc)

    def build() -> Flow:
        built = {node_id: plan.build() for node_id, plan in planned.items()}
        for edge in doc.edges:
            built[edge.from_].next(built[edge.to], edge.action)
        use_async = any(kind_of(node) in ASYNC_KINDS for node in built.values())
        return (AsyncFlow if use_async else Flow)(start=built[doc.start])

    build.__doc__ = doc.description
    return build


def register_document(
    data: Any, *, registry: Registry | None = None, origin: str = "a flow document"
) -> FlowSpec:
    """Validate, compile and register one declarative flow."""
    doc = parse_document(data)
    build = builder(doc)
    input_model = None
    if doc.input_schema is not None:
        input_model = schema_model(f"{doc.name}_{doc.version}_input", doc.input_schema)
    try:
        return register(
            doc.name,
            build,
            input=input_model,
            version=doc.version,
            mode=doc.mode,
            output=doc.output,
            description=doc.description or f"declarative flow ({origin})",
            registry=registry,
        )
    except FlowDefinitionError:
        raise
    except PocketrunError as exc:  # e.g. a duplicate the registry refuses
        raise FlowDefinitionError(exc.detail) from None
