"""``json_schema``: check a shared value against a JSON Schema; route "valid" or "invalid"."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nodes import templates
from nodes.catalog import CatalogNode, catalog_node


class JsonSchemaParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: dict[str, Any] = Field(alias="schema", description="A JSON Schema (2020-12)")
    value: str | None = Field(default=None, description="The path to check; null: the store")
    errors: str = Field(default="validation_errors", description="Where 'invalid' puts why")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @field_validator("value", "errors")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return value if value is None else templates.check_path(value)


@catalog_node(
    "json_schema",
    params=JsonSchemaParams,
    actions=["valid", "invalid"],
    description="Check shared[value] (or the whole store) against a JSON Schema; route "
    "'valid', or 'invalid' with shared[errors] = [{path, message}].",
)
class JsonSchemaCheck(CatalogNode[JsonSchemaParams]):
    def prep(self, shared: dict[str, Any]) -> Any:
        if self.config.value is None:
            return shared
        return templates.lookup(shared, self.config.value, None)

    def exec(self, value: Any) -> list[dict[str, str]]:
        validator = Draft202012Validator(self.config.schema_)
        found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.path])
        return [
            {"path": "/".join(str(p) for p in error.absolute_path), "message": error.message}
            for error in found
        ]

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: list[dict[str, str]]) -> str:
        if exec_res:
            shared[self.config.errors] = exec_res
            return "invalid"
        return "valid"
