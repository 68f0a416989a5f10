"""Hostile input and what every secured call gets on its way out.

``SecurityMiddleware`` (plain ASGI, inside ``RequestMiddleware`` so the body cap and the
request id already apply):

- query strings over ``MAX_QUERY_BYTES`` are 414;
- text no database can store (NUL, lone surrogates, invalid UTF-8) in the path, the query
  or a stored header is 422 (``api.request_text``);
- JSON bodies must be strict JSON: no ``NaN``/``Infinity``, no duplicate keys, no lone
  surrogates, no NUL in any string, no invalid UTF-8, no absurd nesting (422), checked
  before FastAPI parses them;
- rate-limit headers computed during authentication are added to the response;
- a successful call that needed a mutating permission is written to the audit log.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from api import openapi
from api.auditing import Denial, audit_record, denial_record
from api.auth import DENIED_SCOPE_KEY
from api.authz import AUDIT_SCOPE_KEY, undeclared_routes
from api.problems import is_json_media, problem
from api.request_text import request_text_errors
from api.routes import audit, keys, runs
from api.routing import serve_first
from api.schemas import json_problems
from api.security import HEADERS_SCOPE_KEY
from core.metrics import DENIALS_UNAUDITED
from core.settings import Settings
from db.audit import AuditRecord

log = structlog.get_logger("pocketrun.api")
Scope = dict[str, Any]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the keys and audit routes, the OpenAPI additions and the security middleware;
    call it before the outermost ``RequestMiddleware`` is added."""
    app.include_router(keys.router)
    app.include_router(audit.router)
    serve_first(app, runs.router)  # the status poll is the hottest call of all
    openapi.install(app)
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
    try:
        json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _NotStrict as exc:
        return str(exc)
    except RecursionError:
        return "the JSON is nested too deeply"
    except UnicodeDecodeError:
        return "the body is not valid UTF-8"
    except ValueError:
        return None
    try:
        orjson.loads(body)  # rejects lone surrogates and nesting over 1024
    except orjson.JSONDecodeError:
        return "the JSON has invalid strings or is nested too deeply"
    return None


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI will parse the body as JSON (only with a JSON content type)."""
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return is_json_media(value.decode("latin-1"))
    return False


class SecurityMiddleware:
    def __init__(self, app: Any, max_query_bytes: int) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes

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
        if text_errors := request_text_errors(scope):
            detail = "the request holds text that can't be stored (NUL, surrogates, bad UTF-8)"
            await problem(422, detail, type_="invalid-input", errors=text_errors)(
                scope, receive, send
            )
            return
        if scope["method"] in BODY_METHODS and _is_json(scope):
            receive, rejected = await _checked_body(receive)
            if rejected is not None:
                detail, errors = rejected
                response = problem(422, detail, type_="invalid-input", errors=errors)
                await response(scope, receive, send)
                return

        async def send_secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get(HEADERS_SCOPE_KEY)
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
                intent = scope.get(AUDIT_SCOPE_KEY)
                if intent is not None and message["status"] < 400:
                    await _audit(scope, intent, message)
                elif message["status"] in (401, 403) and DENIED_SCOPE_KEY in scope:
                    await _audit_denial(scope, scope[DENIED_SCOPE_KEY], message["status"])
            await send(message)

        await self.app(scope, receive, send_secured)


Rejected = tuple[str, list[dict[str, Any]]]  # (detail, errors) of a 422


def body_rejection(body: bytes) -> Rejected | None:
    """Why a JSON body is refused before parsing: not strict JSON, or text somewhere in it
    that no database can store (``core.text``); None to let FastAPI parse it."""
    error = strict_json_error(body)
    if error is not None:
        where = [{"loc": ["body"], "path": "body", "msg": error, "type": "json_strict"}]
        return "the request body is not strict JSON", where
    # Strict JSON writes NUL only as this escape (lone surrogates failed above).
    if b"\\u0000" in body:
        found = json_problems(orjson.loads(body), ("body",))
        unstorable = [p for p in found if p["type"] == "json_invalid_string"]
        if unstorable:
            return "the request body holds text that can't be stored", unstorable
    return None


async def _checked_body(receive: Any) -> tuple[Any, Rejected | None]:
    """(a receive that replays the body, why it is refused or None)."""
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

        return replay_disconnect, None
    body = b"".join(chunks)
    error = body_rejection(body) if body else None
    done = False

    async def replay() -> dict[str, Any]:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, error


async def _audit(scope: Scope, intent: tuple[Any, str], message: dict[str, Any]) -> None:
    headers = dict(message.get("headers", ()))
    await _write(scope, audit_record(scope, intent, message["status"], headers))


async def _audit_denial(scope: Scope, denial: Denial, status: int) -> None:
    if scope["app"].state.security.denials.take():
        await _write(scope, denial_record(scope, denial, status))
    else:
        DENIALS_UNAUDITED.inc()


async def _write(scope: Scope, record: AuditRecord) -> None:
    try:
        await scope["app"].state.security.audit.record(record)
    except Exception as exc:  # the call already happened: never turn it into an error
        log.error(
            "audit write failed",
            action=record.action,
            target=record.target,
            error=type(exc).__name__,
        )
