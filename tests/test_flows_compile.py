"""The compiler and the registry: stable ids, graph hashes, and refusals that say what and where."""

from __future__ import annotations

import warnings

import pytest
from pocketflow import AsyncFlow, AsyncNode, AsyncParallelBatchFlow, BatchFlow, Flow, Node

from core.errors import FlowDefinitionError
from flows.compiler import Kind, compile_flow
from flows.registry import REGISTRY, Registry, flow, register
from nodes.human import AskHuman


class Add(Node):
    pass


class Mul(Node):
    pass


class Wait(AsyncNode):
    pass


def build_nested() -> Flow:
    """validate -> inner[Add -> Add -> Mul] -> Add, with ids that repeat inside and out."""
    first = Add()
    first >> Add() >> Mul()
    inner = Flow(start=first)
    inner.name = "inner"
    validate = Add()
    validate.name = "validate"
    validate >> inner >> Add()
    return Flow(start=validate)


# ---------------------------------------------------------------------------- node ids


def test_node_ids_are_the_same_for_two_builds():
    first, second = compile_flow(build_nested()), compile_flow(build_nested())

    assert list(first.nodes) == list(second.nodes)
    assert [n.successors for n in first.nodes.values()] == [
        n.successors for n in second.nodes.values()
    ]


def test_nested_ids_are_paths_numbered_per_flow_in_successor_order():
    graph = compile_flow(build_nested())

    assert list(graph.nodes) == [
        "",
        "validate",
        "inner",
        "inner/Add",
        "inner/Add#2",
        "inner/Mul",
        "Add",
    ]
    assert graph.root.start == "validate"
    assert graph["inner"].start == "inner/Add"
    assert graph["inner/Add"].successors == {"default": "inner/Add#2"}
    assert graph["inner"].successors == {"default": "Add"}
    assert graph["inner/Mul"].parent == "inner"
    assert graph["inner"].kind is Kind.flow


def test_name_attribute_replaces_the_class_name():
    graph = compile_flow(build_nested())

    assert "validate" in graph.nodes
    assert graph["validate"].cls.endswith(".Add")
    assert graph["validate"].label == "validate"
    # the unnamed Add at the top level is the first of its name there
    assert graph["Add"].parent == ""


def test_a_node_reached_twice_keeps_one_id():
    loop, done = Add(), Mul()
    loop - "again" >> loop
    loop - "done" >> done
    done >> loop

    graph = compile_flow(Flow(start=loop))

    assert list(graph.nodes) == ["", "Add", "Mul"]
    assert graph["Add"].successors == {"again": "Add", "done": "Mul"}
    assert graph["Mul"].successors == {"default": "Add"}


def test_batch_and_async_containers_have_their_kinds():
    inner = Wait()
    batch = BatchFlow(start=Add())
    top_sync = Flow(start=batch)
    par = AsyncParallelBatchFlow(start=inner)
    top_async = AsyncFlow(start=par)

    assert compile_flow(top_sync)["BatchFlow"].kind is Kind.batch_flow
    graph = compile_flow(top_async)
    assert graph["AsyncParallelBatchFlow"].kind is Kind.async_node  # one step
    assert "AsyncParallelBatchFlow/Wait" not in graph.nodes


# ---------------------------------------------------------------------------- graph hash


def test_graph_hash_is_equal_for_two_builds():
    assert compile_flow(build_nested()).hash == compile_flow(build_nested()).hash


def test_graph_hash_changes_when_an_edge_changes():
    def build(action: str) -> Flow:
        a, b = Add(), Mul()
        a - action >> b
        return Flow(start=a)

    def build_retarget() -> Flow:
        a, b, c = Add(), Mul(), Mul()
        a >> b
        a - "other" >> c
        b >> c  # an extra edge
        return Flow(start=a)

    base = compile_flow(build("default")).hash
    assert compile_flow(build("default")).hash == base
    assert compile_flow(build("renamed")).hash != base
    assert compile_flow(build_retarget()).hash != base


def test_graph_hash_changes_with_retries():
    def build(retries: int) -> Flow:
        return Flow(start=Node(max_retries=retries))

    assert compile_flow(build(1)).hash != compile_flow(build(3)).hash


# ---------------------------------------------------------------------------- refusals


def refusal(build) -> str:
    with pytest.raises(FlowDefinitionError) as info:
        compile_flow(build())
    return info.value.detail


def test_refuses_a_flow_without_start_node():
    assert refusal(Flow) == "the top-level flow has no start node"


def test_refuses_a_nested_flow_without_start_node_and_names_it():
    def build():
        inner = Flow()
        inner.name = "inner"
        first = Add()
        first >> inner
        return Flow(start=first)

    assert refusal(build) == "flow 'inner' has no start node"


def test_refuses_an_async_node_inside_a_sync_flow():
    def build():
        first = Add()
        first >> Wait()
        return Flow(start=first)

    message = refusal(build)
    assert "async node 'Wait'" in message
    assert "the top-level flow" in message
    assert "AsyncFlow" in message


def test_refuses_an_async_node_inside_a_nested_sync_flow():
    def build():
        inner = Flow(start=Wait())
        inner.name = "inner"
        return AsyncFlow(start=inner)

    message = refusal(build)
    assert "'inner/Wait'" in message
    assert "flow 'inner'" in message


def test_refuses_a_successor_that_is_not_a_node():
    def build():
        first = Add()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first - "next" >> "not a node"
        return Flow(start=first)

    message = refusal(build)
    assert "node 'Add' (action 'next')" in message
    assert "'not a node'" in message
    assert "not a pocketflow node" in message


def test_refuses_a_start_that_is_not_a_node():
    message = refusal(lambda: Flow(start=42))
    assert "the top-level flow leads to 42" in message


def test_refuses_a_node_object_used_in_two_flows():
    def build():
        shared_node = Mul()
        one, two = Flow(start=shared_node), Flow(start=Add())
        one.name, two.name = "one", "two"
        two.start_node >> shared_node
        one >> two
        return Flow(start=one)

    message = refusal(build)
    assert "node 'one/Mul' is used in two flows" in message
    assert "flow 'one'" in message
    assert "flow 'two'" in message


@pytest.mark.parametrize("bad", ["a/b", "a#b", "", "   "])
def test_refuses_a_node_name_with_a_slash_or_hash_or_blank(bad):
    def build():
        first = Add()
        first.name = bad
        return Flow(start=first)

    if not bad:  # an empty name falls back to the class name
        assert list(compile_flow(build()).nodes) == ["", "Add"]
        return
    message = refusal(build)
    assert repr(bad) in message
    assert "the top-level flow" in message


def test_refuses_a_factory_that_does_not_return_a_flow():
    registry = Registry()

    with pytest.raises(FlowDefinitionError) as info:
        register("not-a-flow", lambda: Add(), registry=registry)

    assert "flow 'not-a-flow' version 1" in info.value.detail
    assert "must return a pocketflow Flow, got Add" in info.value.detail
    assert "not-a-flow" not in registry


def test_refuses_a_parallel_batch_flow_as_the_top_flow():
    with pytest.raises(FlowDefinitionError, match="got AsyncParallelBatchFlow"):
        compile_flow(AsyncParallelBatchFlow(start=Wait()))


def test_register_prefixes_refusals_with_the_flow_and_version():
    registry = Registry()

    with pytest.raises(FlowDefinitionError) as info:
        register("broken", Flow, version="7", registry=registry)

    assert info.value.detail == "flow 'broken' version 7: the top-level flow has no start node"
    assert "broken" not in registry


# ---------------------------------------------------------------------------- registry


def test_register_into_a_private_registry_leaves_the_global_one_alone():
    registry = Registry()

    spec = register("throwaway", build_nested, registry=registry, output=["value"])

    assert registry.get("throwaway") is spec
    assert "throwaway" not in REGISTRY
    assert spec.graph_hash == compile_flow(build_nested()).hash
    assert spec.description.startswith("validate -> inner")


def test_flow_decorator_registers_and_returns_the_factory():
    registry = Registry()

    @flow("decorated", registry=registry, version="2", mode="inline")
    def build() -> Flow:
        return Flow(start=Add())

    assert callable(build)
    assert registry.get("decorated").version == "2"
    assert registry.get("decorated").mode == "inline"


def test_instantiate_refuses_a_factory_that_changes_shape():
    registry = Registry()
    calls = []

    def build() -> Flow:
        calls.append(1)
        first = Add()
        if len(calls) > 1:
            first >> Mul()
        return Flow(start=first)

    spec = register("shifty", build, registry=registry)

    with pytest.raises(FlowDefinitionError, match="factories must be deterministic"):
        spec.instantiate()


# ---------------------------------------------------------------------------- mermaid


def test_mermaid_names_every_node_and_nested_flow():
    graph = compile_flow(build_nested())
    text = graph.mermaid()

    assert text.startswith("flowchart TD")
    for info in graph.nodes.values():
        if info.id:
            assert f'["{info.label}"]' in text
    assert "subgraph" in text
    assert text.count("-->") == sum(len(n.successors) for n in graph.nodes.values())


def test_mermaid_labels_actions():
    a, b = Add(), Mul()
    a - "approve" >> b
    text = compile_flow(Flow(start=a)).mermaid()

    assert '-- "approve" -->' in text


# ---------------------------------------------------------------------------- built-in flows

EXAMPLES = {"hello", "triage", "flaky", "wordcount", "pipeline", "fanout", "long"}


def test_every_example_flow_registers_and_compiles():
    import flows.examples  # noqa: F401

    for name in EXAMPLES:
        spec = REGISTRY.get(name)
        assert spec.description, name
        assert spec.output, name
        _, graph = spec.instantiate()
        assert graph.hash == spec.graph_hash
        assert graph.root.start in graph.nodes
    assert REGISTRY.get("hello").mode == "inline"
    assert {REGISTRY.get(n).mode for n in EXAMPLES - {"hello"}} == {"background"}


def test_every_edge_flow_registers_and_compiles():
    from tests import edge_flows

    names = {spec.name for spec in REGISTRY.all() if spec.name.startswith("edge-")}
    listed = {name for name, _ in edge_flows.EDGE_FLOWS}
    assert listed <= names
    assert {"edge-maxsteps", "edge-unserializable", "edge-boom", "edge-slow"} <= names
    assert "edge-counted" in names
    for name in names:
        spec = REGISTRY.get(name)
        _, graph = spec.instantiate()
        assert graph.hash == spec.graph_hash


def test_listed_inputs_validate():
    from tests import edge_flows

    for name, data in edge_flows.EDGE_FLOWS + edge_flows.EXAMPLE_INPUTS:
        store = REGISTRY.get(name).validate_input(data)
        assert isinstance(store, dict), name


def test_example_node_ids():
    import flows.examples  # noqa: F401

    pipeline = REGISTRY.get("pipeline").graph
    assert "process/inner/Add#2" in pipeline.nodes
    assert pipeline["process"].successors == {"big": "clamp", "small": "Done"}
    triage = REGISTRY.get("triage").graph
    assert triage["Score"].successors == {
        "approve": "approve",
        "review": "Review",
        "reject": "reject",
    }
    assert "escalate" not in triage["Review"].successors
    wordcount = REGISTRY.get("wordcount").graph
    assert wordcount["PerChunk"].kind is Kind.batch_flow
    fanout = REGISTRY.get("fanout").graph
    assert fanout.root.kind is Kind.async_flow


def test_ask_human_inside_a_parallel_batch_flow_is_refused() -> None:
    inner = AsyncParallelBatchFlow(start=AskHuman("which?"))
    with pytest.raises(FlowDefinitionError, match="AskHuman node out of it"):
        compile_flow(AsyncFlow(start=inner))
