"""``http_request``: one HTTP call, its URL, headers and body templated from the store."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nodes import http, templates
from nodes.catalog import catalog_node


class HttpRequestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(description="A template: https://api.example.com/orders/{order.id}")
    headers: dict[str, str] = Field(default_factory=dict, description="Values are templates")
    body: Any = Field(default=None, description="A JSON template, sent as JSON; null: none")
    result: str = Field(default="response", description="The shared key for the response")
    timeout: float = Field(default=30.0, gt=0, le=600)
    on_error: Literal["fail", "route"] = Field(
        default="fail",
        description="A status of 400 or more: fail the step (retries apply), or route 'error'",
    )
    retries: int = Field(
        default=0, ge=0, le=10, description="Extra attempts on errors, timeouts, 5xx and 429"
    )
    backoff: float = Field(default=0.5, ge=0, le=60, description="First retry delay (doubles)")
    max_backoff: float = Field(default=30.0, ge=0, le=600, description="Cap, Retry-After too")
    breaker: bool = Field(default=True, description="A circuit breaker per scheme+host+port")
    failure_threshold: int = Field(default=5, ge=1, le=1000, description="Failures to open")
    reset_after: float = Field(default=30.0, gt=0, le=3600, description="Seconds open")

    @field_validator("url", "headers", "body")
    @classmethod
    def _template(cls, value: Any) -> Any:
        return templates.check(value)

    @field_validator("result")
    @classmethod
    def _key(cls, value: str) -> str:
        return templates.check_path(value)


@catalog_node(
    "http_request",
    params=HttpRequestParams,
    actions=["default", "error"],
    description="Send one HTTP request; shared[result] = {status, headers, body} (JSON bodies "
    "parsed). Retries with backoff on connection errors, timeouts, 5xx and 429; a circuit "
    "breaker per service fails calls fast while it keeps failing. Private, loopback and "
    "link-local addresses are refused unless POCKETRUN_HTTP_ALLOW_PRIVATE=true.",
)
class HttpRequest(http.HttpRequest):
    """``nodes.http.HttpRequest`` built from validated params (``config``)."""

    def __init__(self, config: HttpRequestParams) -> None:
        super().__init__(**config.model_dump())
        self.config = config
