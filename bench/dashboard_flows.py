"""A flow for bench/dashboard.py: one step that streams ``chunks`` output events at once."""

from __future__ import annotations

from typing import Any

from pocketflow import Flow, Node
from pydantic import BaseModel, Field

from core.context import emit
from flows.registry import register


class ChatterIn(BaseModel):
    chunks: int = Field(ge=1, le=1_000_000)


class Chatter(Node):
    def prep(self, shared: dict[str, Any]) -> int:
        return shared["chunks"]

    def exec(self, prep_res: int) -> int:
        for i in range(prep_res):
            emit(f"chunk {i}\n")
        return prep_res

    def post(self, shared: dict[str, Any], prep_res: int, exec_res: int) -> None:
        shared["sent"] = exec_res


register("chatter", lambda: Flow(start=Chatter()), input=ChatterIn, output=["sent"])
