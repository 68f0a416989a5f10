"""fanout: an AsyncFlow that plans, fetches in parallel, then digests one by one."""

from __future__ import annotations

from pocketflow import AsyncFlow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes.aio import Digest, FetchAll, Plan


class FanoutIn(BaseModel):
    items: list[str] = Field(default_factory=lambda: ["a", "b", "c"], max_length=100)
    delay: float = Field(0.01, ge=0, le=1, description="simulated latency unit, seconds")


def build() -> AsyncFlow:
    plan = Plan()
    plan >> FetchAll() >> Digest()
    return AsyncFlow(start=plan)


register(
    "fanout",
    build,
    input=FanoutIn,
    output=["pages", "digests"],
    description=(
        "AsyncNode plans one fetch per item, AsyncParallelBatchNode fetches them concurrently "
        "(results in item order), AsyncBatchNode checksums each page."
    ),
    step_timeout=30,
)
