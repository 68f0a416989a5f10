"""``HttpRequest``: a PocketFlow node for one HTTP call, with a timeout, retries (exponential
backoff with jitter, ``Retry-After`` honoured up to ``max_backoff``) and a circuit breaker
per service (scheme, host and port; ``nodes.breaker``), shared across workers through Redis.

Configure it in code, or subclass it (override ``prep`` to build the request)::

    fetch = HttpRequest(url="https://api.example.com/orders/{order.id}", timeout=5, retries=2)

The catalog node ``http_request`` is this class built from validated params. When the
breaker is open the call fails at once with ``CircuitOpen`` and the node's own
``max_retries`` are not spent on it (``nodes.breaker.FailFast``).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.errors import CircuitOpen
from core.settings import get_settings
from nodes import templates
from nodes.breaker import CircuitBreaker, FailFast
from nodes.net import check_public

MAX_RESPONSE_BYTES = 1024 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class HttpOptions:
    url: str  # a template, rendered against the shared store
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)  # values are templates
    body: Any = None  # a JSON template; None: no body
    result: str = "response"
    timeout: float = 30.0
    on_error: str = "fail"  # a status >= 400: "fail" the step or "route" 'error'
    retries: int = 0  # extra attempts on connection errors, timeouts, 5xx and 429
    backoff: float = 0.5  # first retry delay; doubles each time, with full jitter
    max_backoff: float = 30.0  # cap for the delay and for a Retry-After
    breaker: bool = True
    failure_threshold: int = 5  # consecutive failures that open the breaker
    reset_after: float = 30.0  # seconds open before one trial call


class HttpRequest(FailFast):
    def __init__(self, url: str = "", *, max_retries: int = 1, wait: float = 0, **options: Any):
        super().__init__(max_retries=max_retries, wait=wait)
        self.options = HttpOptions(url=url, **options)

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        o = self.options
        return {
            "method": o.method,
            "url": str(templates.render(o.url, shared)),
            "headers": {k: str(v) for k, v in templates.render(o.headers, shared).items()},
            "body": templates.render(o.body, shared),
        }

    def exec(self, request: dict[str, Any]) -> dict[str, Any]:
        result = send(request, self.options)
        if result["status"] >= 400 and self.options.on_error == "fail":
            raise RuntimeError(f"{request['method']} {request['url']} answered {result['status']}")
        return result

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: dict[str, Any]) -> str:
        shared[self.options.result] = exec_res
        return "error" if exec_res["status"] >= 400 else "default"


def service_of(url: str) -> str:
    """The breaker's key: scheme://host:port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def send(request: dict[str, Any], o: HttpOptions) -> dict[str, Any]:
    """One request with the retries and the breaker; {status, headers, body}."""
    if not get_settings().http_allow_private:
        check_public(request["url"])
    breaker = (
        CircuitBreaker(
            service_of(request["url"]),
            failure_threshold=o.failure_threshold,
            reset_after=o.reset_after,
            trial_timeout=o.timeout * 2 + 5,
        )
        if o.breaker
        else None
    )
    attempt = 0
    while True:
        try:
            if breaker is None:
                result = _once(request, o)
            else:
                with breaker.guard() as call:
                    result = _once(request, o)
                    if result["status"] in RETRY_STATUSES:
                        call.failed()
        except CircuitOpen:
            raise
        except (httpx.TransportError, httpx.TimeoutException):
            if attempt >= o.retries:
                raise
            delay = _delay(o, attempt, None)
        else:
            if result["status"] not in RETRY_STATUSES or attempt >= o.retries:
                return result
            delay = _delay(o, attempt, result["headers"].get("retry-after"))
        attempt += 1
        time.sleep(delay)


def _delay(o: HttpOptions, attempt: int, retry_after: str | None) -> float:
    if retry_after is not None:
        try:
            return min(max(0.0, float(retry_after)), o.max_backoff)
        except ValueError:
            pass  # an HTTP date: fall back to the backoff
    return random.uniform(0, min(o.max_backoff, o.backoff * 2**attempt))


def _once(request: dict[str, Any], o: HttpOptions) -> dict[str, Any]:
    options: dict[str, Any] = {"headers": request["headers"]}
    if request["body"] is not None:
        options["json"] = request["body"]
    with (
        httpx.Client(timeout=o.timeout, follow_redirects=False) as client,
        client.stream(request["method"], request["url"], **options) as response,
    ):
        content = b""
        for chunk in response.iter_bytes():
            content += chunk
            if len(content) > MAX_RESPONSE_BYTES:
                raise ValueError(f"the response is over {MAX_RESPONSE_BYTES} bytes")
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": _body(response, content),
    }


def _body(response: httpx.Response, content: bytes) -> Any:
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(content)
        except ValueError:
            pass
    return content.decode(response.encoding or "utf-8", errors="replace")
