"""Flows for the drain and cluster tests: nodes that hang for as long as a gate file exists.

A node of ``drain-hang`` (sync, in a step thread), ``drain-hang-async`` (on the loop) or
``drain-hang-loop`` (sync, called on the loop itself: it blocks the whole process) appends
its step key to the file ``log`` when its exec starts, then never returns while the file
``gate`` exists: to the process running it, it hangs forever. A test removes the gate
before the next server starts, so there the same step runs again and the run succeeds.
"""

from __future__ import annotations

import asyncio
import os
import time

from pocketflow import AsyncFlow, AsyncNode, Flow, Node
from pydantic import BaseModel, Field

from core.context import step_key
from flows.registry import register

POLL = 0.05


class HangIn(BaseModel):
    gate: str = Field(..., min_length=1)
    log: str = Field(..., min_length=1)


def _entered(log: str) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{step_key()}\n")


class Hang(Node):
    def prep(self, shared):
        return shared["gate"], shared["log"]

    def exec(self, prep_res):
        gate, log = prep_res
        _entered(log)
        while os.path.exists(gate):
            time.sleep(POLL)

    def post(self, shared, prep_res, exec_res):
        shared["passed"] = True


class AsyncHang(AsyncNode):
    async def prep_async(self, shared):
        return shared["gate"], shared["log"]

    async def exec_async(self, prep_res):
        gate, log = prep_res
        _entered(log)
        # a node polling a file, blocking the loop for microseconds, is the point here
        while os.path.exists(gate):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(POLL)

    async def post_async(self, shared, prep_res, exec_res):
        shared["passed"] = True


def build_hang() -> Flow:
    return Flow(start=Hang())


def build_hang_async() -> AsyncFlow:
    return AsyncFlow(start=AsyncHang())


# No step timeout: only the drain can cut these steps short.
register("drain-hang", build_hang, input=HangIn, step_timeout=None, run_timeout=None)
register("drain-hang-async", build_hang_async, input=HangIn, step_timeout=None, run_timeout=None)
register(
    "drain-hang-loop",
    build_hang,
    input=HangIn,
    step_timeout=None,
    run_timeout=None,
    sync_nodes="loop",
)
