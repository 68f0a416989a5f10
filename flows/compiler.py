"""Walk a PocketFlow graph once: stable node ids, a graph hash, and refusals that say where.

A node id is a path through nested flows (``validate``, ``inner/Add#2``), assigned
depth-first in successor insertion order, one id per node object. The root flow's id
is the empty string.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from pocketflow import (
    AsyncBatchFlow,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    BaseNode,
    BatchFlow,
    Flow,
)

from core.errors import FlowDefinitionError
from core.jsonutil import dumps
from nodes.human import asks_human

ROOT = ""


class Kind(StrEnum):
    node = "node"  # a leaf run by the thread pool
    async_node = "async_node"  # a leaf awaited on the loop
    flow = "flow"
    batch_flow = "batch_flow"
    async_flow = "async_flow"
    async_batch_flow = "async_batch_flow"


CONTAINERS = {Kind.flow, Kind.batch_flow, Kind.async_flow, Kind.async_batch_flow}
ASYNC_KINDS = {Kind.async_node, Kind.async_flow, Kind.async_batch_flow}


def kind_of(node: BaseNode) -> Kind:
    if isinstance(node, AsyncParallelBatchFlow):
        return Kind.async_node  # runs as one step
    if isinstance(node, AsyncBatchFlow):
        return Kind.async_batch_flow
    if isinstance(node, AsyncFlow):
        return Kind.async_flow
    if isinstance(node, BatchFlow):
        return Kind.batch_flow
    if isinstance(node, Flow):
        return Kind.flow
    if isinstance(node, AsyncNode):
        return Kind.async_node
    return Kind.node


@dataclass(slots=True)
class NodeInfo:
    id: str
    kind: Kind
    cls: str
    parent: str | None
    obj: BaseNode
    successors: dict[str, str] = field(default_factory=dict)
    start: str | None = None  # containers: the id of the first inner node

    @property
    def is_container(self) -> bool:
        return self.kind in CONTAINERS

    @property
    def label(self) -> str:
        return self.id.rsplit("/", 1)[-1] if self.id else "flow"


@dataclass(slots=True)
class Graph:
    nodes: dict[str, NodeInfo]
    hash: str

    def __getitem__(self, node_id: str) -> NodeInfo:
        return self.nodes[node_id]

    @property
    def root(self) -> NodeInfo:
        return self.nodes[ROOT]

    def to_json(self) -> dict:
        nodes, edges = [], []
        for info in self.nodes.values():
            if info.id == ROOT:
                continue
            nodes.append(
                {
                    "id": info.id,
                    "type": info.cls.rsplit(".", 1)[-1],
                    "kind": info.kind.value,
                    "parent": info.parent or None,
                    "start": info.start,
                    "max_retries": getattr(info.obj, "max_retries", 1),
                    "wait": getattr(info.obj, "wait", 0),
                }
            )
            edges.extend(
                {"from": info.id, "to": target, "action": action}
                for action, target in info.successors.items()
            )
        return {"start": self.root.start, "nodes": nodes, "edges": edges}

    def mermaid(self) -> str:
        lines = ["flowchart TD"]

        def ref(node_id: str) -> str:
            return "n_" + hashlib.sha1(node_id.encode()).hexdigest()[:10]

        def emit(container: NodeInfo, indent: str) -> None:
            for info in self.nodes.values():
                if info.parent != container.id or info.id == ROOT:
                    continue
                if info.is_container:
                    lines.append(f'{indent}subgraph {ref(info.id)}["{info.label}"]')
                    emit(info, indent + "  ")
                    lines.append(f"{indent}end")
                else:
                    lines.append(f'{indent}{ref(info.id)}["{info.label}"]')

        emit(self.root, "  ")
        for info in self.nodes.values():
            for action, target in info.successors.items():
                arrow = "-->" if action == "default" else f'-- "{action}" -->'
                lines.append(f"  {ref(info.id)} {arrow} {ref(target)}")
        return "\n".join(lines)


def compile_flow(flow: BaseNode) -> Graph:
    """Assign ids and check the shape; raise FlowDefinitionError saying what and where."""
    if not isinstance(flow, Flow) or isinstance(flow, AsyncParallelBatchFlow):
        raise FlowDefinitionError(
            f"a flow factory must return a pocketflow Flow, got {type(flow).__name__}"
        )
    nodes: dict[str, NodeInfo] = {}
    owner: dict[int, str] = {}  # id(obj) -> node id

    def describe(container_id: str) -> str:
        return f"flow '{container_id}'" if container_id else "the top-level flow"

    def visit_container(container: Flow, container_id: str) -> None:
        if container.start_node is None:
            raise FlowDefinitionError(f"{describe(container_id)} has no start node")
        names: Counter[str] = Counter()
        in_async = isinstance(container, AsyncFlow)

        def assign(node: object, came_from: str) -> str:
            if not isinstance(node, BaseNode):
                raise FlowDefinitionError(
                    f"{came_from} leads to {node!r}, which is not a pocketflow node"
                )
            known = owner.get(id(node))
            if known is not None:
                if nodes[known].parent != container_id:
                    raise FlowDefinitionError(
                        f"node '{known}' is used in two flows: {describe(nodes[known].parent)} "
                        f"and {describe(container_id)}; give each flow its own node objects"
                    )
                return known
            base = getattr(node, "name", None) or type(node).__name__
            if not isinstance(base, str) or "/" in base or "#" in base or not base.strip():
                raise FlowDefinitionError(
                    f"node name {base!r} in {describe(container_id)} must be a non-empty "
                    "string without '/' or '#'"
                )
            names[base] += 1
            local = base if names[base] == 1 else f"{base}#{names[base]}"
            node_id = f"{container_id}/{local}" if container_id else local
            kind = kind_of(node)
            if kind in ASYNC_KINDS and not in_async:
                raise FlowDefinitionError(
                    f"async node '{node_id}' ({type(node).__name__}) is inside "
                    f"{describe(container_id)}, which is a sync Flow; use AsyncFlow"
                )
            if isinstance(node, AsyncParallelBatchFlow) and (asking := _asks_inside(node)):
                raise FlowDefinitionError(
                    f"{asking} asks a person for input inside '{node_id}', an "
                    "AsyncParallelBatchFlow that runs as one step, so the run can't wait "
                    "there; move the AskHuman node out of it"
                )
            owner[id(node)] = node_id
            cls = type(node)
            nodes[node_id] = NodeInfo(
                node_id, kind, f"{cls.__module__}.{cls.__qualname__}", container_id, node
            )
            if kind in CONTAINERS:
                visit_container(node, node_id)  # type: ignore[arg-type]
            for action, successor in node.successors.items():
                if not isinstance(action, str):
                    raise FlowDefinitionError(f"node '{node_id}' has a non-string action")
                nodes[node_id].successors[action] = assign(
                    successor, f"node '{node_id}' (action '{action}')"
                )
            return node_id

        nodes[container_id].start = assign(container.start_node, describe(container_id))

    root_cls = type(flow)
    nodes[ROOT] = NodeInfo(
        ROOT, kind_of(flow), f"{root_cls.__module__}.{root_cls.__qualname__}", None, flow
    )
    owner[id(flow)] = ROOT
    visit_container(flow, ROOT)
    return Graph(nodes, _graph_hash(nodes))


def _node_name(node: BaseNode) -> str:
    return getattr(node, "name", None) or type(node).__name__


def _asks_inside(flow: Flow) -> str | None:
    """The first AskHuman node reachable inside ``flow`` (nested flows too), or None."""
    seen: set[int] = set()
    stack: list[BaseNode] = [flow.start_node] if flow.start_node is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if asks_human(node):
            return f"node '{_node_name(node)}'"
        if isinstance(node, Flow) and node.start_node is not None:
            stack.append(node.start_node)
        stack.extend(n for n in node.successors.values() if isinstance(n, BaseNode))
    return None


def _graph_hash(nodes: dict[str, NodeInfo]) -> str:
    shape = [
        [
            info.id,
            info.kind.value,
            info.cls,
            info.start,
            getattr(info.obj, "max_retries", 1),
            getattr(info.obj, "wait", 0),
            sorted(info.successors.items()),
        ]
        for info in nodes.values()
    ]
    return hashlib.sha256(dumps(shape)).hexdigest()[:16]


def first_leaf(graph: Graph, node_id: str | None) -> str | None:
    """The leaf that runs first when ``node_id`` is entered (itself, for a leaf)."""
    while node_id is not None and graph[node_id].is_container:
        node_id = graph[node_id].start
    return node_id
