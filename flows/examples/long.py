"""long: many slow steps in a cycle, for watching progress and cancelling."""

from __future__ import annotations

from pocketflow import Flow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes import named
from nodes.control import SetKey
from nodes.progress import Tick


class LongIn(BaseModel):
    steps: int = Field(60, ge=1, le=10_000)
    delay: float = Field(0.5, ge=0, le=10, description="seconds slept per step")


def build() -> Flow:
    tick = Tick()
    tick - "again" >> tick
    tick - "finished" >> named(SetKey("status", "finished"), "finish")
    return Flow(start=tick)


register(
    "long",
    build,
    input=LongIn,
    output=["done", "percent", "status"],
    description=(
        "Ticks `steps` times, sleeping `delay` seconds each time and appending the tick "
        "number to `progress` (defaults: 60 x 0.5 s = 30 s)."
    ),
    max_steps=10_100,
    step_timeout=30,
    run_timeout=None,
)
