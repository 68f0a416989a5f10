"""A flow that declares its schedule in code (loaded only where a test wants it ticking)."""

from __future__ import annotations

from pocketflow import Flow, Node

from flows.registry import Schedule, register


class Tock(Node):
    def post(self, shared, prep_res, exec_res):
        shared["tocked"] = True


def build_ticker() -> Flow:
    return Flow(start=Tock())


register(
    "ticker",
    build_ticker,
    description="starts itself every second",
    schedules=[Schedule(every=1, input={"from": "code"}, name="ticker-every-second")],
)
