"""The reference for state history: plain ``pocketflow``'s shared store after each step.

pocketrun commits a step after a leaf node's ``post`` and the ``post`` of every flow that
ended with it; the ``prep`` of a flow commits with its first inner step. So the store
"after step N" is plain pocketflow's store at the moment the run moves on from leaf N:
when the next node or flow starts, or when the run ends.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pocketflow

from core.jsonutil import roundtrip
from flows.registry import REGISTRY
from tests import edge_flows  # noqa: F401  (registers the edge flows)

_inside_leaf: contextvars.ContextVar[bool] = contextvars.ContextVar("in_leaf", default=False)

# Every class that defines its own run method; AsyncParallelBatchFlow is one step.
_SYNC = (pocketflow.BaseNode, pocketflow.Flow, pocketflow.BatchFlow)
_ASYNC = (
    pocketflow.AsyncNode,
    pocketflow.AsyncFlow,
    pocketflow.AsyncBatchFlow,
    pocketflow.AsyncParallelBatchFlow,
)


class _Recorder:
    def __init__(self, shared: dict[str, Any]) -> None:
        self.shared = shared
        self.states = [roundtrip(shared)]
        self.leaves = 0
        self.pending = False  # a leaf ended; the store is taken when the run moves on

    def moving_on(self) -> None:
        if self.pending:
            self.states.append(roundtrip(self.shared))
            self.pending = False

    def leaf_ended(self) -> None:
        self.leaves += 1
        self.pending = True


def _is_leaf(node: pocketflow.BaseNode) -> bool:
    return not isinstance(node, pocketflow.Flow) or isinstance(
        node, pocketflow.AsyncParallelBatchFlow
    )


@contextmanager
def _recording(recorder: _Recorder) -> Iterator[None]:
    originals = [(cls, "_run", cls.__dict__["_run"]) for cls in _SYNC]
    originals += [(cls, "_run_async", cls.__dict__["_run_async"]) for cls in _ASYNC]

    def wrap_sync(original):
        def run(self, shared):
            if _inside_leaf.get():
                return original(self, shared)
            recorder.moving_on()
            if not _is_leaf(self):
                return original(self, shared)
            token = _inside_leaf.set(True)
            try:
                return original(self, shared)
            finally:
                _inside_leaf.reset(token)
                recorder.leaf_ended()

        return run

    def wrap_async(original):
        async def run(self, shared):
            if _inside_leaf.get():
                return await original(self, shared)
            recorder.moving_on()
            if not _is_leaf(self):
                return await original(self, shared)
            token = _inside_leaf.set(True)
            try:
                return await original(self, shared)
            finally:
                _inside_leaf.reset(token)
                recorder.leaf_ended()

        return run

    for cls, name, original in originals:
        setattr(cls, name, wrap_sync(original) if name == "_run" else wrap_async(original))
    try:
        yield
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


def pocketflow_states(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Plain pocketflow's store after 0, 1, ... N steps of flow ``name`` on ``data``, as a
    JSON round trip returns it. A run with no step at all ends at "step 0": its one state
    is the final store (pocketrun commits that end as the snapshot after step 0)."""
    spec = REGISTRY.get(name)
    shared = spec.validate_input(data)
    flow, _ = spec.instantiate()
    recorder = _Recorder(shared)
    with _recording(recorder):
        if isinstance(flow, pocketflow.AsyncFlow):
            asyncio.run(flow.run_async(shared))
        else:
            flow.run(shared)
    recorder.moving_on()
    if recorder.leaves == 0:
        return [roundtrip(shared)]
    return recorder.states
