"""``ask_human``: the catalog's ``AskHuman`` (nodes/human.py), its prompt a template."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nodes import templates
from nodes.catalog import catalog_node
from nodes.human import AskHuman


class AskHumanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(default="", description="A template: 'Approve {amount}?'")
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="A JSON Schema the answer must fit"
    )
    timeout: float | None = Field(default=None, gt=0, description="Seconds; then timed_out")
    key: str = Field(default="answer", description="The shared key for the answer")

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        return templates.check(value)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return templates.check_path(value)


@catalog_node(
    "ask_human",
    params=AskHumanParams,
    actions=["default"],
    actions_of=lambda _: None,
    description="Wait for a person's answer (POST /v1/runs/{id}/resume); shared[key] = the "
    "answer, and an answer object's string 'action' routes.",
)
class CatalogAskHuman(AskHuman):
    def __init__(self, config: AskHumanParams) -> None:
        super().__init__(
            config.prompt, schema=config.schema_, timeout=config.timeout, key=config.key
        )
        self.config = config

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        request = super().prep(shared)
        request["prompt"] = str(templates.render(self.prompt, shared))
        return request
