"""``template``: set shared keys from templates of other keys (no code, no eval)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nodes import templates
from nodes.catalog import CatalogNode, catalog_node


class TemplateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set: dict[str, Any] = Field(
        min_length=1,
        description="shared key -> template: {'greeting': 'Hello, {user.name}!', "
        "'total': '{order.total}'} (a lone hole keeps the value's type)",
    )

    @field_validator("set")
    @classmethod
    def _templates(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or not isinstance(key, str):
                raise ValueError("keys must be non-empty strings")
        return templates.check(value)


@catalog_node(
    "template",
    params=TemplateParams,
    description="Set shared keys from {path} templates of the shared store.",
)
class Template(CatalogNode[TemplateParams]):
    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        return templates.render(self.config.set, shared)

    def post(self, shared: dict[str, Any], prep_res: dict[str, Any], exec_res: Any) -> None:
        shared.update(prep_res)
