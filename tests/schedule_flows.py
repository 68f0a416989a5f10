"""A flow with an input schema for the schedule tests."""

from __future__ import annotations

from pocketflow import Flow, Node
from pydantic import BaseModel, Field

from flows.registry import register


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    times: int = Field(default=1, ge=1, le=10)


class Greet(Node):
    def prep(self, shared):
        return shared["name"], shared["times"]

    def exec(self, prep_res):
        name, times = prep_res
        return " ".join([f"hello {name}"] * times)

    def post(self, shared, prep_res, exec_res):
        shared["greeting"] = exec_res


def build_greet() -> Flow:
    return Flow(start=Greet())


register("greet", build_greet, input=Greeting, output=["greeting"], description="says hello")
