"""A server span for each HTTP request, only when tracing is on.

FastAPI releases with native telemetry (``fastapi.telemetry``) make that span themselves
once a tracer provider is set (named for the route, a caller's ``traceparent``
honoured, around every middleware); here it only gains the request id. With an older
FastAPI this middleware makes the span. With tracing off nothing is installed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from fastapi import FastAPI
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from core import tracing as config

Scope = dict[str, Any]
REQUEST_ID_ATTRIBUTE = "pocketrun.request.id"


def native_telemetry() -> bool:
    return importlib.util.find_spec("fastapi.telemetry") is not None


class TracingMiddleware:
    """``own_span``: make the request's span; else annotate the one FastAPI made."""

    def __init__(self, app: Any, own_span: bool) -> None:
        self.app = app
        self.own_span = own_span

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.own_span:
            span = trace.get_current_span()
            await self.app(scope, receive, _annotating(send, span, record_status=False))
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope.get("path", "")}
        with config.tracer().start_as_current_span(
            method, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            try:
                await self.app(scope, receive, _annotating(send, span, record_status=True))
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")


def _annotating(send: Any, span: trace.Span, *, record_status: bool) -> Any:
    async def traced_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            for key, value in message.get("headers", []):
                if key == b"x-request-id":
                    span.set_attribute(REQUEST_ID_ATTRIBUTE, value.decode())
            if record_status:
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
        await send(message)

    return traced_send


def install(app: FastAPI) -> None:
    """Outermost of ours, so it sees the response's headers (call after the others)."""
    if config.ENABLED:
        app.add_middleware(TracingMiddleware, own_span=not native_telemetry())
