"""Flows the dashboard tests drive in a real browser: slow steps to watch, one that fails
once and succeeds when retried, and one that waits for a person's answer."""

from __future__ import annotations

import time
from typing import Any

from pocketflow import Node
from pydantic import BaseModel, Field

from core.context import step_key
from flows.registry import register
from nodes.human import AskHuman

STEP_SECONDS = 0.6
_FAILED_ONCE: set[str] = set()  # runs whose Flaky step failed already (this server process)


class Stage(Node):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def exec(self, prep_res: Any) -> str:
        time.sleep(STEP_SECONDS)
        return self.name

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: str) -> None:
        shared.setdefault("stages", []).append(exec_res)


class Order(BaseModel):
    label: str = Field(min_length=1, description="What to call the run")
    count: int = Field(ge=1, le=100, description="How many items (1 to 100)")
    express: bool = False


def build_stages():
    from pocketflow import Flow

    first, second, third, fourth = (Stage(n) for n in ("receive", "check", "pack", "ship"))
    first >> second >> third >> fourth
    return Flow(start=first)


class Flaky(Node):
    """Fails the first time a run reaches it in this process; the run's retry succeeds."""

    def exec(self, prep_res: Any) -> str:
        run = step_key().split(":", 1)[0]
        if run not in _FAILED_ONCE:
            _FAILED_ONCE.add(run)
            raise RuntimeError("the upstream service is down (first try)")
        return "ok"

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: str) -> None:
        shared["flaky"] = exec_res


class Note(Node):
    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["noted"] = True


def build_flaky():
    from pocketflow import Flow

    before, flaky, after = Note(), Flaky(), Note()
    before.name, after.name = "before", "after"
    before >> flaky >> after
    return Flow(start=before)


APPROVAL = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "description": "Ship it?"},
        "note": {"type": "string", "minLength": 2},
    },
    "required": ["approved", "note"],
}


class Record(Node):
    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["recorded"] = shared.get("answer")


def build_approval():
    from pocketflow import Flow

    ask = AskHuman("Approve the order?", schema=APPROVAL)
    ask.name = "approve"
    record = Record()
    ask >> record
    return Flow(start=ask)


register("ui-stages", build_stages, input=Order, output=None, description="Four slow stages")
register("ui-flaky", build_flaky, output=None, description="Fails once, then a retry succeeds")
register("ui-approval", build_approval, output=None, description="Waits for an approval")
