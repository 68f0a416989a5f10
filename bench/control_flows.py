"""The flow bench.control resumes: ``Ask`` (an AskHuman) then ``Stamp``, which notes when it
ran (``time.time()`` in its exec, the next step after the answer) in the shared store.

    POCKETRUN_FLOWS=bench.control_flows
"""

from __future__ import annotations

import time
from typing import Any

from pocketflow import Flow, Node

from flows.registry import register
from nodes.human import AskHuman

ANSWER = {
    "type": "object",
    "required": ["go"],
    "properties": {"go": {"type": "boolean"}},
    "additionalProperties": False,
}


class Ask(AskHuman):
    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": "go?", "schema": ANSWER}


class Stamp(Node):
    def exec(self, prep_res: Any) -> float:
        return time.time()

    def post(self, shared, prep_res, exec_res):
        shared["stamped_at"] = exec_res


def build_ask() -> Flow:
    ask = Ask()
    ask >> Stamp()
    return Flow(start=ask)


register("bench-ask", build_ask, output=["answer", "stamped_at"])
