"""May a run in flight move to another version of its flow? A static check on two graphs.

A run stands at a node (the cursor's next node) inside nested flows (the cursor's frames).
It can go on in the other version when that node, each enclosing flow, and every edge
out of them (same action, same target) exist there too, with the same kind (a leaf stays
a leaf, a flow a flow). What the node does may change: that is the new version.
"""

from __future__ import annotations

from collections.abc import Sequence

from flows.compiler import ROOT, Graph


def migration_problem(
    source: Graph, target: Graph, frames: Sequence[str], node: str | None
) -> str | None:
    """Why a run at ``node`` inside ``frames`` (container ids, outermost first) can't move
    from ``source`` to ``target``; None when it can."""
    for flow_id in frames:
        problem = _missing(source, target, flow_id, "enclosing flow")
        if problem is not None:
            return problem
    if node is None or node == ROOT:
        return None
    return _missing(source, target, node, "node")


def _missing(source: Graph, target: Graph, node_id: str, what: str) -> str | None:
    if node_id == ROOT:
        return None
    there = target.nodes.get(node_id)
    if there is None:
        return f"{what} '{node_id}' does not exist in the target version"
    here = source.nodes.get(node_id)
    if here is None:
        return None  # not in the run's own graph either: nothing to compare
    if here.is_container != there.is_container:
        kinds = ("a flow", "a node") if here.is_container else ("a node", "a flow")
        return f"{what} '{node_id}' is {kinds[0]} here but {kinds[1]} in the target version"
    if here.parent != there.parent:
        return f"{what} '{node_id}' sits in another flow in the target version"
    for action, successor in here.successors.items():
        if there.successors.get(action) != successor:
            return (
                f"edge '{node_id}' -> '{successor}' (action '{action}') does not exist in "
                "the target version"
            )
    return None
