"""Flows for the durable-control tests: a person's answer, a failing node, a durable
sleep and a slow run to pause.

Nodes that must run a known number of times count their calls in files under
``POCKETRUN_TEST_COUNTERS`` (one line per call), so the count survives the processes a
test kills. ``build_*`` functions give the same graphs for plain ``pocketflow``.
"""

from __future__ import annotations

import os
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from pocketflow import Flow, Node
from pydantic import BaseModel

from core.context import sleep
from flows.registry import register
from nodes.human import AskHuman


def count(label: str) -> None:
    """One more call of ``label`` (when the test set a counter directory)."""
    where = os.environ.get("POCKETRUN_TEST_COUNTERS")
    if where:
        with open(Path(where) / label, "a") as out:
            out.write("x\n")


def counted(where: str | Path, label: str) -> int:
    path = Path(where) / label
    return len(path.read_text().splitlines()) if path.exists() else 0


class Draft(Node):
    def prep(self, shared: dict[str, Any]) -> str:
        count("draft.prep")
        return shared["topic"]

    def exec(self, topic: str) -> str:
        return f"a short note about {topic}"

    def post(self, shared, prep_res, exec_res):
        shared["draft"] = exec_res


APPROVAL = {
    "type": "object",
    "required": ["approved"],
    "properties": {
        "approved": {"type": "boolean"},
        "edit": {"type": "string", "maxLength": 200},
    },
    "additionalProperties": False,
}


class Approve(AskHuman):
    """A person approves the draft or edits it; rejecting routes to ``rejected``."""

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        count("approve.prep")
        shared["asked"] = shared.get("asked", 0) + 1  # a prep's change commits with the step
        request: dict[str, Any] = {"prompt": f"Approve: {shared['draft']}", "schema": APPROVAL}
        if shared.get("timeout"):
            request["timeout"] = shared["timeout"]
        return request

    def post(self, shared, prep_res, exec_res):
        shared["review"] = exec_res
        if exec_res.get("edit"):
            shared["draft"] = exec_res["edit"]
        return "approved" if exec_res["approved"] else "rejected"


class Publish(Node):
    def prep(self, shared):
        return shared["draft"]

    def post(self, shared, prep_res, exec_res):
        count("publish")
        shared["published"] = prep_res


class Reject(Node):
    def post(self, shared, prep_res, exec_res):
        shared["published"] = None


class Topic(BaseModel):
    topic: str = "durable runs"
    timeout: float | None = None


def build_approve() -> Flow:
    draft, approve, publish = Draft(), Approve(), Publish()
    draft >> approve
    approve - "approved" >> publish
    approve - "rejected" >> Reject()
    return Flow(start=draft)


class Outer(Flow):
    def prep(self, shared):
        shared["outer"] = "entered"


def build_nested_approve() -> Flow:
    inner = build_approve()
    outer = Outer(start=inner)
    inner >> Publish()  # after the inner flow ends, the outer one publishes again
    return outer


class Before(Node):
    def prep(self, shared):
        count("before")

    def post(self, shared, prep_res, exec_res):
        shared["before"] = shared.get("before", 0) + 1


class Fragile(Node):
    """Fails while ``shared["ok"]`` is not true; records what it saw."""

    def prep(self, shared):
        return shared.get("ok")

    def exec(self, ok):
        count("fragile.exec")
        if ok is not True:
            raise RuntimeError("not ok yet")
        return ok

    def post(self, shared, prep_res, exec_res):
        shared["seen"] = exec_res


def build_fragile() -> Flow:
    before, fragile = Before(), Fragile(max_retries=2)
    before >> fragile
    return Flow(start=before)


class Add(Node):
    def __init__(self, amount: int) -> None:
        super().__init__()
        self.amount = amount

    def post(self, shared, prep_res, exec_res):
        shared["total"] = shared.get("total", 0) + self.amount
        shared["trail"] = [*shared.get("trail", []), self.amount]


def build_chain() -> Flow:
    """Five steps whose result depends on where a run starts and on its state."""
    nodes = [Add(n) for n in (1, 10, 100, 1000, 10000)]
    for a, b in pairwise(nodes):
        a >> b
    return Flow(start=nodes[0])


class Snooze(Node):
    def post(self, shared, prep_res, exec_res):
        count("snooze")
        shared["slept_at"] = time.time()
        sleep(shared.get("seconds", 3))


class Wake(Node):
    def post(self, shared, prep_res, exec_res):
        count("wake")
        shared["woke_at"] = time.time()


def build_snooze() -> Flow:
    snooze = Snooze()
    snooze >> Wake()
    return Flow(start=snooze)


class Plod(Node):
    """One slow step of ``plod``: counts itself by its index."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def exec(self, prep_res):
        time.sleep(0.3)

    def post(self, shared, prep_res, exec_res):
        count(f"plod.{self.index}")
        shared["done"] = [*shared.get("done", []), self.index]


def build_plod() -> Flow:
    nodes = [Plod(i) for i in range(8)]
    for a, b in pairwise(nodes):
        a >> b
    return Flow(start=nodes[0])


class Wait(BaseModel):
    seconds: float = 3


register("approve", build_approve, input=Topic, output=None)
register("nested-approve", build_nested_approve, input=Topic, output=None)
register("fragile", build_fragile, output=None)
register("chain", build_chain, output=None)
register("snooze", build_snooze, input=Wait, output=None)
register("plod", build_plod, output=None)
