"""The peer benchmarks' workload (DESIGN.md section 7), once for every contender.

A 10-node flow whose every node reads ``counter``, writes ``counter + 1`` and a fresh
1 KB string ``payload`` (``os.urandom(512).hex()``). Built here for:

- pocketrun: ``build()``, a line of ``pocketflow.Node`` subclasses; importing this module
  also registers it as the inline flow ``bench10`` (``POCKETRUN_FLOWS=bench.peer_flows``);
- LangGraph: ``langgraph_builder()``, a ``StateGraph`` of 10 nodes; the module attribute
  ``graph`` is it compiled without a checkpointer, as ``langgraph dev`` loads it (the
  server brings its own persistence). Imported as ``bench.peer_flows``, ``graph`` is
  built on first access, so pocketrun's server never imports LangGraph;
- the raw floors and DBOS: ``next_state(state)``, the same work as a plain function.

``langgraph dev`` may load this file by path from a virtualenv of its own (see
``bench/http_inline.py``), where neither pocketflow nor pocketrun's packages exist: the
pocketrun half is then skipped.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, TypedDict

NODES = 10
FLOW_NAME = "bench10"


def payload() -> str:
    """A fresh 1 KB string."""
    return os.urandom(512).hex()


def next_state(state: dict[str, Any]) -> dict[str, Any]:
    """One node's work: read ``counter``, write ``counter + 1`` and a fresh payload."""
    return {"counter": state["counter"] + 1, "payload": payload()}


# --- pocketrun (pocketflow nodes) ----------------------------------------------------------

try:
    from pocketflow import Flow, Node
except ImportError:  # `langgraph dev` in its own virtualenv: the LangGraph half only
    Flow = Node = None  # type: ignore[assignment,misc]

if Node is not None:

    class Step(Node):
        """Reads ``counter``; writes ``counter + 1`` and a fresh 1 KB ``payload``."""

        def prep(self, shared: dict[str, Any]) -> int:
            return shared["counter"]

        def exec(self, prep_res: int) -> dict[str, Any]:
            return {"counter": prep_res + 1, "payload": payload()}

        def post(self, shared: dict[str, Any], prep_res: int, exec_res: dict[str, Any]) -> None:
            shared["counter"] = exec_res["counter"]
            shared["payload"] = exec_res["payload"]

    def build() -> Flow:
        """10 nodes in a line, each: counter + 1 and a fresh 1 KB payload."""
        first = node = Step()
        for _ in range(NODES - 1):
            nxt = Step()
            node >> nxt
            node = nxt
        return Flow(start=first)

    try:
        from flows.registry import register
    except ImportError:  # loaded outside pocketrun's checkout
        register = None  # type: ignore[assignment]

    if register is not None:
        SPEC = register(
            FLOW_NAME,
            build,
            mode="inline",
            step_timeout=None,
            run_timeout=None,
            sync_nodes="loop",
            description="peer benchmark: 10 nodes, each counter + 1 and a fresh 1 KB payload",
        )


# --- LangGraph -----------------------------------------------------------------------------


class GraphState(TypedDict, total=False):
    counter: int
    payload: str


def _lg_node(state: GraphState) -> dict[str, Any]:
    return {"counter": state["counter"] + 1, "payload": payload()}


def langgraph_builder() -> Any:
    """The same 10 nodes as a LangGraph ``StateGraph`` (uncompiled)."""
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(GraphState)
    names = [f"n{i}" for i in range(NODES)]
    for name in names:
        builder.add_node(name, _lg_node)
    builder.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder


_compiled: Any = None


def __getattr__(name: str) -> Any:
    # ``bench.peer_flows.graph``: compiled on first use, so importing this module (as
    # pocketrun's server does) never imports LangGraph
    global _compiled
    if name == "graph":
        if _compiled is None:
            _compiled = langgraph_builder().compile()
        return _compiled
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ != "bench.peer_flows":
    # loaded by file path, as ``langgraph dev`` loads langgraph.json's
    # ``.../peer_flows.py:graph``: it reads the module's namespace, not its attributes
    graph = langgraph_builder().compile()
