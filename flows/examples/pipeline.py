"""pipeline: flows nested three deep; the middle flow's post picks the parent's next node."""

from __future__ import annotations

from pocketflow import Flow, Node
from pydantic import BaseModel, Field

from flows.registry import register
from nodes import named
from nodes.control import mark
from nodes.numbers import Add, Clamp, Multiply


class PipelineIn(BaseModel):
    value: float = Field(1, ge=-1_000_000, le=1_000_000)
    limit: float = Field(50, description="results above this are clamped")


class Validate(Node):
    def prep(self, shared):
        return shared["value"]

    def exec(self, value):
        return float(value)

    def post(self, shared, prep_res, exec_res):
        shared["value"] = exec_res
        mark(shared, "validate")


class Stage(Flow):
    """A nested flow that routes its parent: ``big`` when the value passed ``limit``."""

    def prep(self, shared):
        return shared["limit"]

    def post(self, shared, prep_res, exec_res):
        return "big" if shared["value"] > prep_res else "small"


class Done(Node):
    def post(self, shared, prep_res, exec_res):
        shared["result"] = shared["value"]
        mark(shared, "done")


def build() -> Flow:
    # innermost: +2, +3, *2
    add = Add(2)
    add >> Add(3) >> Multiply(2)
    inner = named(Flow(start=add), "inner")
    # middle: *3, then the inner flow
    scale = Multiply(3)
    scale >> inner
    process = named(Stage(start=scale), "process")
    # top: validate, process, then clamp big results
    validate, done = named(Validate(), "validate"), Done()
    validate >> process
    process - "big" >> named(Clamp(), "clamp") >> done
    process - "small" >> done
    return Flow(start=validate)


register(
    "pipeline",
    build,
    input=PipelineIn,
    output=["result", "trail"],
    description=(
        "value -> validate -> process[*3 -> inner[+2 -> +3 -> *2]] -> clamp to `limit` when "
        "the process flow routes 'big' -> done. Node ids like 'process/inner/Add#2'."
    ),
)
