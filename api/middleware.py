"""One plain ASGI middleware: request id, body size cap, security headers, latency metric.

A body over ``MAX_BODY_BYTES`` (declared by ``Content-Length`` or found while streaming) is
answered 413, after the rest of it is read and dropped: a server that answers and closes
while the client is still sending makes the client's kernel see a reset instead of the
answer. Draining stops at ``DRAIN_BYTES`` in all or after ``DRAIN_SECONDS``; a client that
sent ``Expect: 100-continue`` has sent nothing yet and is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from typing import Any

import structlog
from starlette.exceptions import HTTPException

from api.problems import outage_problem, problem
from core.metrics import API_SECONDS

Scope = dict[str, Any]
log = structlog.get_logger("pocketrun.api")

DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class _TooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing lets it through."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is too large")


class RequestMiddleware:
    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        response_started = False

        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            if length <= DRAIN_BYTES and _header(scope, b"expect") is None:
                await _drain(receive, 0)
            await self._too_large(scope, receive, send, request_id)
            return

        received = 0
        more_body = True

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise _TooLarge
            return message

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _TooLarge:
            if response_started:
                raise
            if more_body:
                await _drain(receive, received)
            await self._too_large(scope, receive, send, request_id)
            status = 413
        except Exception as exc:
            # Answered here rather than by Starlette's outer error middleware, which
            # re-raises after its 500 and so makes uvicorn drop the keep-alive connection.
            if response_started:
                raise
            response = outage_problem(exc)  # the database is away: 503, not a bug
            if response is None:
                log.exception("unhandled error", path=scope.get("path"))
                response = problem(500, "an internal error occurred; it has been logged")
            response.headers["X-Request-ID"] = request_id
            await response(scope, receive, send)
            status = response.status_code
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            _latency(scope["method"], path, status).observe(time.perf_counter() - started)

    async def _too_large(self, scope: Scope, receive: Any, send: Any, request_id: str) -> None:
        response = problem(
            413,
            f"the request body is over the {self.max_body_bytes}-byte limit",
            type_="payload-too-large",
            headers={"X-Request-ID": request_id, "Connection": "close"},
        )
        await response(scope, receive, send)


async def _drain(receive: Any, received: int) -> None:
    """Read and drop the rest of the request body, within the bounds above."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while received <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


@functools.lru_cache(maxsize=4096)
def _latency(method: str, path: str, status: int) -> Any:
    """The latency histogram's child for one label set (``labels()`` costs more than
    ``observe``); a cache bounded by methods x routes x statuses."""
    return API_SECONDS.labels(method, path, str(status))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _request_id(scope: Scope) -> str:
    raw = _header(scope, b"x-request-id")
    if raw and len(raw) <= 128 and raw.isascii():
        text = raw.decode()
        if text.replace("-", "").replace("_", "").isalnum():
            return text
    return os.urandom(16).hex()
