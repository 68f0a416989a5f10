"""Hostile input and what every secured call gets on its way out.

``SecurityMiddleware`` (plain ASGI, inside ``RequestMiddleware`` so the body cap and the
request id already apply):

- query strings over ``MAX_QUERY_BYTES`` are 414;
- JSON bodies must be strict JSON: no ``NaN``/``Infinity``, no duplicate keys, no lone
  surrogates, no absurd nesting (422), checked before FastAPI parses them;
- rate-limit headers computed during authentication are added to the response;
- a successful call that needed a mutating permission is written to the audit log.

``secure_openapi`` documents 401/403/429 on every secured operation.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware

from api.auditing import audit_record
from api.authz import AUDIT_SCOPE_KEY, app_routes, route_permission, undeclared_routes
from api.fastpath import NOT_JSON, CreateFastPath, PollFastPath
from api.problems import problem
from api.routes import audit, keys
from api.security import HEADERS_SCOPE_KEY
from core.settings import Settings

log = structlog.get_logger("pocketrun.api")
Scope = dict[str, Any]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the keys and audit routes and the security middleware; call it before the
    outermost ``RequestMiddleware`` is added."""
    app.include_router(keys.router)
    app.include_router(audit.router)
    secure_openapi(app)
    for route in undeclared_routes(app):
        log.warning("route declares no permission (any authenticated caller)", route=route)
    app.add_middleware(SecurityMiddleware, max_query_bytes=settings.max_query_bytes)
    if settings.cors_origin_list:  # closed by default: no CORS headers at all
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "Last-Event-ID",
                "X-Request-ID",
            ],
            expose_headers=[
                "Location",
                "ETag",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "X-Request-ID",
            ],
        )


class _NotStrict(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _NotStrict(f"duplicate key {key[:100]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise _NotStrict(f"{name} is not JSON")


def strict_json_error(body: bytes) -> str | None:
    """Why ``body`` is not strict JSON, or None (also for plain malformed JSON, which
    FastAPI reports itself with the position of the error)."""
    return strict_json(body)[1]


def strict_json(body: bytes) -> tuple[Any, str | None]:
    """(the parsed body, None) for strict JSON; (NOT_JSON, why) when it is not strict JSON;
    (NOT_JSON, None) for plain malformed JSON, which FastAPI reports itself with the
    position of the error. The value is what ``json.loads`` (FastAPI's parser) gives."""
    try:
        value = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _NotStrict as exc:
        return NOT_JSON, str(exc)
    except RecursionError:
        return NOT_JSON, "the JSON is nested too deeply"
    except ValueError:
        return NOT_JSON, None
    try:
        orjson.loads(body)  # rejects lone surrogates and nesting over 1024
    except orjson.JSONDecodeError:
        return NOT_JSON, "the JSON has invalid strings or is nested too deeply"
    return value, None


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return True  # FastAPI parses a body without a content type as JSON


class SecurityMiddleware:
    def __init__(self, app: Any, max_query_bytes: int) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes
        self.fast_poll = PollFastPath()
        self.fast_create = CreateFastPath()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query_bytes:
            detail = f"the query string is over the {self.max_query_bytes}-byte limit"
            await problem(414, detail, type_="uri-too-long", title="URI too long")(
                scope, receive, send
            )
            return
        if scope["method"] == "GET" and await self.fast_poll(scope, send):
            return
        if scope["method"] in BODY_METHODS and _is_json(scope):
            receive, value, error = await _checked_body(receive)
            if error is not None:
                response = problem(
                    422,
                    "the request body is not strict JSON",
                    type_="invalid-input",
                    errors=[{"loc": ["body"], "path": "body", "msg": error, "type": "json_strict"}],
                )
                await response(scope, receive, send)
                return
            if value is not NOT_JSON and await self.fast_create(scope, send, value):
                return

        async def send_secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get(HEADERS_SCOPE_KEY)
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
                intent = scope.get(AUDIT_SCOPE_KEY)
                if intent is not None and message["status"] < 400:
                    await _audit(scope, intent, message)
            await send(message)

        await self.app(scope, receive, send_secured)


async def _checked_body(receive: Any) -> tuple[Any, Any, str | None]:
    """(a receive that replays the body, the parsed body or NOT_JSON, why it is not strict
    JSON or None)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # disconnected: let the app see it
            chunks = None
            first = message
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if chunks is None:
        replayed = False

        async def replay_disconnect() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        return replay_disconnect, NOT_JSON, None
    body = b"".join(chunks)
    value, error = strict_json(body) if body else (NOT_JSON, None)
    done = False

    async def replay() -> dict[str, Any]:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, value, error


async def _audit(scope: Scope, intent: tuple[Any, str], message: dict[str, Any]) -> None:
    record = audit_record(scope, intent, message["status"], dict(message.get("headers", ())))
    try:
        await scope["app"].state.security.audit.record(record)
    except Exception as exc:  # the call already happened: never turn it into an error
        log.error(
            "audit write failed",
            action=record.action,
            target=record.target,
            error=type(exc).__name__,
        )


_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_SECURED_RESPONSES = {
    "401": "Missing or invalid credentials",
    "403": "The caller's role lacks the permission",
    "429": "Rate limit exceeded",
}


def secure_openapi(app: FastAPI) -> None:
    """Document the security responses on every operation that declares a permission."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for path, methods, route in app_routes(app):
            if not isinstance(route, APIRoute) or route_permission(route) is None:
                continue
            for method in methods:
                operation = schema.get("paths", {}).get(path, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for code, description in _SECURED_RESPONSES.items():
                    responses.setdefault(
                        code,
                        {
                            "description": description,
                            "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}},
                        },
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
