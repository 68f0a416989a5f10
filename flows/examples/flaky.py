"""flaky: retry then fallback; a node that fails its first `fail_times` attempts."""

from __future__ import annotations

from pocketflow import Flow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes import named
from nodes.control import SetKey
from nodes.faults import Flaky


class FlakyIn(BaseModel):
    fail_times: int = Field(1, ge=0, le=10, description="attempts that fail before success")


def build() -> Flow:
    call = Flaky(max_retries=3, wait=0.05)
    call - "ok" >> named(SetKey("status", "ok"), "ok")
    call - "fallback" >> named(SetKey("status", "degraded"), "degraded")
    return Flow(start=call)


register(
    "flaky",
    build,
    input=FlakyIn,
    output=["result", "status"],
    description=(
        "Calls a node that fails its first `fail_times` attempts, with max_retries=3 and "
        "wait=0.05: fail_times <= 2 succeeds after retries, 3 or more returns the fallback."
    ),
)
