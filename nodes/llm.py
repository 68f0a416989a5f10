"""``llm_chat``: one OpenAI-compatible chat completion (``POST {base}/chat/completions``).

The base URL and key come from settings (``POCKETRUN_LLM_BASE_URL``,
``POCKETRUN_LLM_API_KEY``), never from a flow document; the messages are templates.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.settings import get_settings
from nodes import templates
from nodes.catalog import CatalogNode, catalog_node


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(description="A template: 'Summarise: {text}'")

    @field_validator("content")
    @classmethod
    def _template(cls, value: str) -> str:
        return templates.check(value)


class LlmChatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1)
    result: str = Field(default="reply", description="The shared key for the reply's text")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    timeout: float = Field(default=120.0, gt=0, le=600)

    @field_validator("result")
    @classmethod
    def _key(cls, value: str) -> str:
        return templates.check_path(value)


@catalog_node(
    "llm_chat",
    params=LlmChatParams,
    description="Ask an OpenAI-compatible chat model (POCKETRUN_LLM_BASE_URL, "
    "POCKETRUN_LLM_API_KEY); shared[result] = the reply's text.",
)
class LlmChat(CatalogNode[LlmChatParams]):
    def prep(self, shared: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {"role": m.role, "content": str(templates.render(m.content, shared))}
            for m in self.config.messages
        ]

    def exec(self, messages: list[dict[str, str]]) -> str:
        settings = get_settings()
        if not settings.llm_base_url:
            raise RuntimeError("POCKETRUN_LLM_BASE_URL is not set: llm_chat has no model API")
        c = self.config
        body: dict[str, Any] = {"model": c.model, "messages": messages}
        if c.temperature is not None:
            body["temperature"] = c.temperature
        if c.max_tokens is not None:
            body["max_tokens"] = c.max_tokens
        headers = {}
        if settings.llm_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
        url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        response = httpx.post(url, json=body, headers=headers, timeout=c.timeout)
        if response.status_code >= 400:
            raise RuntimeError(
                f"the model API answered {response.status_code}: {response.text[:300]}"
            )
        try:
            return response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RuntimeError(
                f"the model API's answer has no reply: {response.text[:300]}"
            ) from None

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: str) -> None:
        shared[self.config.result] = exec_res
