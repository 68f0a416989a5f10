"""One typed operation per registered flow in ``/openapi.json``.

``POST /v1/flows/{flow}/runs`` serves every flow, so its ``input`` can only be "an
object". Each flow is documented again at its own concrete path
(``/v1/flows/hello/runs``, which OpenAPI matches before the templated one) as the same
operation with that flow's input schema and an id of its own (``startHello``), so a client
generated from the document has one typed method per flow. Nothing is routed differently:
the concrete path is the templated route.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from flows.registry import FlowSpec

TEMPLATE_PATH = "/v1/flows/{flow}/runs"
TAG = "flow runs"
_WORD = re.compile(r"[A-Za-z0-9]+")


def camel(name: str) -> str:
    """``edge-same_class.v2`` -> ``EdgeSameClassV2``."""
    return "".join(word[:1].upper() + word[1:] for word in _WORD.findall(name))


def add_flow_operations(schema: dict[str, Any], specs: Iterable[FlowSpec]) -> None:
    """Add a typed start operation for each of ``specs`` (one per flow name: the version
    a run gets by default)."""
    paths = schema.get("paths", {})
    template = paths.get(TEMPLATE_PATH, {}).get("post")
    if template is None:
        return
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    taken = {op.get("operationId") for item in paths.values() for op in item.values()}
    for spec in sorted(specs, key=lambda s: s.name):
        name = spec.name
        base = camel(name)
        operation_id = f"start{base}"
        if not base or operation_id in taken:
            continue  # a name that makes no identifier, or clashes: the generic one serves it
        taken.add(operation_id)
        input_ref = _component(components, f"{base}Input", spec.input_schema())
        body = copy.deepcopy(components["RunCreate"])
        body["title"] = f"{base}RunCreate"
        body["properties"]["input"] = {**input_ref, "description": f"The input of '{name}'"}
        components[f"{base}RunCreate"] = body
        operation = copy.deepcopy(template)
        operation["operationId"] = operation_id
        operation["summary"] = f"Start a run of '{name}'"
        operation["description"] = spec.description or operation.get("description", "")
        operation["tags"] = [TAG]
        operation["parameters"] = [
            p for p in operation.get("parameters", []) if p.get("name") != "flow"
        ]
        content = operation["requestBody"]["content"]["application/json"]
        content["schema"] = {"$ref": f"#/components/schemas/{base}RunCreate"}
        paths[f"/v1/flows/{name}/runs"] = {"post": operation}


def _component(components: dict[str, Any], name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Put a pydantic JSON Schema under ``components`` (its ``$defs`` too, prefixed so two
    flows' models of one name stay apart); return the reference to it."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})
    renamed = {key: f"{name}{key}" for key in defs}

    def relink(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node = {**node, "$ref": f"#/components/schemas/{renamed[ref[8:]]}"}
            return {key: relink(value) for key, value in node.items()}
        if isinstance(node, list):
            return [relink(item) for item in node]
        return node

    for key, definition in defs.items():
        components[renamed[key]] = relink(definition)
    schema["title"] = name
    components[name] = relink(schema)
    return {"$ref": f"#/components/schemas/{name}"}
