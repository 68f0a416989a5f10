"""Every error leaves as RFC 9457 problem+json, mapped here and nowhere else."""

from __future__ import annotations

import functools
import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api.authz import app_routes
from core.errors import PocketrunError, RateLimited, Unavailable
from core.jsonutil import dumps
from core.outage import is_database_outage

log = structlog.get_logger("pocketrun.api")
PROBLEM = "application/problem+json"
TYPE_BASE = "https://pocketrun.dev/problems/"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    414: "URI too long",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}

# The same ``type`` whether the error came from a route or from the framework.
_TYPES = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    503: "unavailable",
}


def status_title(status: int) -> str:
    return _TITLES.get(status, "Error")


def is_json_media(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters aside: what FastAPI
    parses as JSON."""
    if not content_type:
        return False
    main, _, sub = content_type.split(";", 1)[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def problem(
    status: int,
    detail: str,
    *,
    type_: str | None = None,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        **(extensions or {}),
        "type": TYPE_BASE + (type_ or str(status)),
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


OUTAGE_RETRY_AFTER = 5  # seconds a client is asked to wait while the database is away


def outage_problem(exc: BaseException) -> Response | None:
    """503 with ``Retry-After`` when ``exc`` says the database is out of reach (see
    ``core.outage``); None for any other error."""
    if not is_database_outage(exc):
        return None
    log.warning("database unavailable", error=type(exc).__name__)
    return problem(
        503,
        "the database is unavailable; retry later",
        type_="unavailable",
        headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
    )


def field_errors(errors: list[Any], prefix: tuple = ()) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = [*prefix, *err.get("loc", ())]
        out.append(
            {
                "loc": loc,
                "path": ".".join(str(p) for p in loc),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
        )
    return out


def _json_error(err: Any) -> Any:
    """FastAPI puts the character offset of a JSON syntax error in ``loc`` (``body.22``),
    which reads like a field; name the body and say where in ``msg`` instead."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") != "json_invalid" or len(loc) != 2 or not isinstance(loc[1], int):
        return err
    reason = (err.get("ctx") or {}).get("error")
    msg = f"JSON decode error at character {loc[1]}" + (f": {reason}" if reason else "")
    return {**err, "loc": (loc[0],), "msg": msg}


def _allowed(request: Request) -> str:
    """Every method some route of the request's path answers."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route_path, route_methods, _ in app_routes(request.app):
        if _path_pattern(route_path).match(path):
            methods |= route_methods
    return ", ".join(sorted(methods))


@functools.cache
def _path_pattern(path: str) -> re.Pattern[str]:
    return compile_path(path)[0]


def _unsupported_body(request: Request, exc: RequestValidationError) -> bool:
    """A body was sent, as something other than JSON, so FastAPI could not read it."""
    headers = request.headers
    sent = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors())
    return sent and whole_body and not is_json_media(headers.get("content-type"))


def install(app: FastAPI) -> None:
    @app.exception_handler(PocketrunError)
    async def _pocketrun(_: Request, exc: PocketrunError) -> Response:
        headers = dict(getattr(exc, "headers", None) or {})  # WWW-Authenticate, RateLimit-*
        if isinstance(exc, RateLimited):
            headers.setdefault("Retry-After", str(exc.retry_after))
        elif isinstance(exc, Unavailable):
            headers.setdefault("Retry-After", str(OUTAGE_RETRY_AFTER))
        return problem(
            exc.status,
            exc.detail,
            type_=exc.type,
            title=exc.title,
            errors=exc.errors,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        if _unsupported_body(request, exc):
            return problem(
                415,
                "the request body must be application/json",
                type_="unsupported-media-type",
            )
        return problem(
            422,
            "the request is not valid",
            type_="invalid-input",
            errors=field_errors([_json_error(e) for e in exc.errors()]),
        )

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> Response:
        return problem(
            422,
            "the request is not valid",
            type_="invalid-input",
            errors=field_errors(exc.errors()),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers["Allow"] = _allowed(request) or headers.get("Allow", "")
        return problem(exc.status_code, detail, type_=_TYPES.get(exc.status_code), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        outage = outage_problem(exc)
        if outage is not None:
            return outage
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "an internal error occurred; it has been logged")
