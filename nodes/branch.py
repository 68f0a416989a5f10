"""``branch``: route by the first of its cases whose expression holds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from nodes.catalog import CatalogNode, catalog_node
from nodes.expressions import Expression


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: str = Field(description='e.g. amount > 100 and customer.tier == "gold"')
    action: str = Field(min_length=1, max_length=100)
    _expression: Expression = PrivateAttr()

    @field_validator("when")
    @classmethod
    def _parse(cls, value: str) -> str:
        Expression(value)  # raises ExpressionError (a ValueError) saying what is wrong
        return value

    def model_post_init(self, _: Any) -> None:
        self._expression = Expression(self.when)

    def holds(self, shared: Any) -> bool:
        return self._expression.evaluate(shared)


class BranchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[Case] = Field(min_length=1)
    otherwise: str = Field(default="default", min_length=1, max_length=100)


def _actions(params: BranchParams) -> list[str]:
    return [*(case.action for case in params.cases), params.otherwise]


@catalog_node(
    "branch",
    params=BranchParams,
    actions=["default"],
    actions_of=_actions,
    description="Route by the action of the first case whose expression holds (paths into "
    "the shared store compared with literals; and, or, not), else by 'otherwise'.",
)
class Branch(CatalogNode[BranchParams]):
    def prep(self, shared: dict[str, Any]) -> str:
        for case in self.config.cases:
            if case.holds(shared):
                return case.action
        return self.config.otherwise

    def exec(self, action: str) -> str:
        return action

    def post(self, shared: dict[str, Any], prep_res: str, exec_res: str) -> str:
        return exec_res
