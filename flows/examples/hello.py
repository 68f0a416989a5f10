"""hello: the smallest flow, for smoke tests: greet, then shout."""

from __future__ import annotations

from pocketflow import Flow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes.text import Greet, Upper


class HelloIn(BaseModel):
    name: str = Field("world", min_length=1, max_length=100)


def build() -> Flow:
    greet = Greet()
    greet >> Upper()
    return Flow(start=greet)


register(
    "hello",
    build,
    input=HelloIn,
    mode="inline",
    output=["greeting"],
    description="Greets `name` in capitals: two nodes, answered inline.",
    step_timeout=10,
    run_timeout=60,
)
