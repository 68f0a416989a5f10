"""One error hierarchy; the API maps it to problem+json in one place."""

from __future__ import annotations

from typing import Any


class PocketrunError(Exception):
    status: int = 500
    type: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str = "", *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors


class NotFound(PocketrunError):
    status, type, title = 404, "not-found", "Not found"


class InvalidInput(PocketrunError):
    status, type, title = 422, "invalid-input", "Invalid input"


class Conflict(PocketrunError):
    status, type, title = 409, "conflict", "Conflict"


class Unauthorized(PocketrunError):
    status, type, title = 401, "unauthorized", "Unauthorized"


class Forbidden(PocketrunError):
    status, type, title = 403, "forbidden", "Forbidden"


class RateLimited(PocketrunError):
    status, type, title = 429, "rate-limited", "Too many requests"

    def __init__(self, detail: str = "", *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(PocketrunError):
    status, type, title = 503, "unavailable", "Service unavailable"


class FlowDefinitionError(PocketrunError):
    """A flow graph pocketrun can't run; raised at registration."""

    status, type, title = 422, "flow-definition", "Unsupported flow shape"


# --- Circuit breaker ------------------------------------------------------------------


class CircuitOpen(PocketrunError):
    """A call refused without being made: the service's circuit breaker is open."""

    status, type, title = 503, "circuit-open", "Circuit open"

    def __init__(self, service: str, retry_at: float, *, reason: str = "") -> None:
        import time

        wait = max(0.0, retry_at - time.time())
        when = time.strftime("%H:%M:%S", time.gmtime(retry_at))
        super().__init__(
            f"circuit open for {service}: {reason or 'it kept failing'}; not called, "
            f"next trial in {wait:.1f}s (at {when} UTC)"
        )
        self.service = service
        self.retry_at = retry_at
