"""``http_request``: one HTTP call, its URL, headers and body templated from the store."""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.settings import get_settings
from nodes import templates
from nodes.catalog import CatalogNode, catalog_node
from nodes.net import check_public

MAX_RESPONSE_BYTES = 1024 * 1024


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

    @field_validator("url", "headers", "body")
    @classmethod
    def _template(cls, value: Any) -> Any:
        return templates.check(value)

    @field_validator("result")
    @classmethod
    def _key(cls, value: str) -> str:
        return templates.check_path(value)


def _body(response: httpx.Response, content: bytes) -> Any:
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(content)
        except ValueError:
            pass
    return content.decode(response.encoding or "utf-8", errors="replace")


@catalog_node(
    "http_request",
    params=HttpRequestParams,
    actions=["default", "error"],
    description="Send one HTTP request; shared[result] = {status, headers, body} (JSON bodies "
    "parsed). Private, loopback and link-local addresses are refused unless "
    "POCKETRUN_HTTP_ALLOW_PRIVATE=true.",
)
class HttpRequest(CatalogNode[HttpRequestParams]):
    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        return {
            "method": c.method,
            "url": str(templates.render(c.url, shared)),
            "headers": {k: str(v) for k, v in templates.render(c.headers, shared).items()},
            "body": templates.render(c.body, shared),
        }

    def exec(self, request: dict[str, Any]) -> dict[str, Any]:
        if not get_settings().http_allow_private:
            check_public(request["url"])
        options: dict[str, Any] = {"headers": request["headers"]}
        if request["body"] is not None:
            options["json"] = request["body"]
        with (
            httpx.Client(timeout=self.config.timeout, follow_redirects=False) as client,
            client.stream(request["method"], request["url"], **options) as response,
        ):
            content = b""
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > MAX_RESPONSE_BYTES:
                    raise ValueError(f"the response is over {MAX_RESPONSE_BYTES} bytes")
        result = {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": _body(response, content),
        }
        if response.status_code >= 400 and self.config.on_error == "fail":
            raise RuntimeError(
                f"{request['method']} {request['url']} answered {response.status_code}"
            )
        return result

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: dict[str, Any]) -> str:
        shared[self.config.result] = exec_res
        return "error" if exec_res["status"] >= 400 else "default"
