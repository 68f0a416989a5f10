"""What ``/openapi.json`` says beyond what FastAPI infers from the routes.

Routes declare their own answers: success headers and the errors their code raises
(``errors(404, 409)``). ``install`` adds what every operation shares, from the one place
that answers it: the middleware's 413 and 414, and on every operation that declares a
permission the bearer scheme, 401, 403 (when some role lacks the permission), 429, 503 and
the ``RateLimit-*`` headers. Every error is ``application/problem+json`` (``Problem``);
FastAPI's own ``HTTPValidationError`` 422 is replaced, as the API never sends it.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.authz import ROLE_PERMISSIONS, app_routes, route_permission
from api.flow_operations import add_flow_operations
from api.problems import PROBLEM, status_title
from api.schemas import Problem

SCHEME = "HTTPBearer"
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")

Headers = dict[str, dict[str, Any]]


def header(description: str, *, kind: str = "string", required: bool = False) -> Headers:
    return {"description": description, "schema": {"type": kind}, "required": required}


LOCATION = {"Location": header("The path of the resource", required=True)}
ETAG = {"ETag": header("The run's version; send it back in `If-None-Match`", required=True)}
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when an earlier request with this `Idempotency-Key` made the run",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
RATE_LIMIT = {
    "RateLimit-Limit": header("Calls allowed per window", kind="integer"),
    "RateLimit-Remaining": header("Calls left in this window", kind="integer"),
    "RateLimit-Reset": header("Seconds until the window resets", kind="integer"),
}
_REQUEST_ID = {"X-Request-ID": header("The request's id, as in the logs", required=True)}
_RETRY_AFTER = {"Retry-After": header("Seconds to wait", kind="integer", required=True)}
_CHALLENGE = {"WWW-Authenticate": header('`Bearer realm="pocketrun"`', required=True)}


def errors(*codes: int, descriptions: dict[int, str] | None = None) -> dict[int | str, Any]:
    """``responses=`` entries for the problems a route answers with."""
    described = descriptions or {}
    return {code: _problem(described.get(code, status_title(code))) for code in codes}


def _problem(description: str, headers: Headers | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM: {"schema": _PROBLEM_REF}},
    }
    if headers:
        response["headers"] = headers
    return response


_EVERY_CALL = {
    "413": _problem("The request body is over `MAX_BODY_BYTES`"),
    "414": _problem("The query string is over 8 KiB"),
    "422": _problem(
        "Invalid input: the request's path, query or a stored header holds text no database "
        "can keep (NUL, unpaired surrogates, bad UTF-8), or its parameters or body are invalid"
    ),
}
_SECURED = {
    "401": _problem("Missing or invalid credentials", _CHALLENGE),
    "429": _problem("Rate limit exceeded", _RETRY_AFTER | RATE_LIMIT),
    "503": _problem("The credentials can't be checked now (signing keys unavailable)"),
}
_FORBIDDEN = _problem("The caller's role lacks the permission")


def install(app: FastAPI) -> None:
    build = app.openapi
    built: dict[str, Any] = {}  # the flows the cached document was made for

    def openapi() -> dict[str, Any]:
        specs = _flows(app)
        key = tuple((s.name, s.version, s.graph_hash) for s in specs)
        if not app.openapi_schema or built.get("key") != key:
            app.openapi_schema = None
            schema = complete(app, build())
            add_flow_operations(schema, specs)
            app.openapi_schema, built["key"] = schema, key
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _flows(app: FastAPI) -> list[Any]:
    """The default version of every flow the running app serves (none before it starts)."""
    state = getattr(app.state, "pocketrun", None)
    if state is None:
        return []
    registry = state.registry
    return [registry.get(name) for name in sorted({s.name for s in registry.all()})]


def complete(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_422:
        schemas.pop(name, None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`prk_...`) or a JWT: `Authorization: Bearer <token>`",
        }
    }
    for path, methods, route in app_routes(app):
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in methods:
            operation = schema.get("paths", {}).get(path, {}).get(method.lower())
            if operation is not None:
                _complete_operation(operation, route)
    return schema


def _complete_operation(operation: dict[str, Any], route: APIRoute) -> None:
    responses = operation.setdefault("responses", {})
    if _is_fastapi_422(responses.get("422")):
        del responses["422"]
    for code, response in _EVERY_CALL.items():
        responses.setdefault(code, copy.deepcopy(response))
    permission = route_permission(route)
    if permission is not None:
        operation["security"] = [{SCHEME: []}]
        for code, response in _SECURED.items():
            responses.setdefault(code, copy.deepcopy(response))
        if any(permission not in granted for granted in ROLE_PERMISSIONS.values()):
            responses.setdefault("403", copy.deepcopy(_FORBIDDEN))
    for response in responses.values():
        headers = response.setdefault("headers", {})
        headers.update(_REQUEST_ID)
        if permission is not None:
            for name, spec in RATE_LIMIT.items():
                headers.setdefault(name, spec)
    operation["responses"] = dict(sorted(responses.items()))


def _is_fastapi_422(response: dict[str, Any] | None) -> bool:
    if response is None:
        return False
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")
