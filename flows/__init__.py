"""The flow registry, the graph compiler and the built-in example flows."""

from flows.registry import REGISTRY, FlowSpec, Registry, flow, load_flows, register

__all__ = ["REGISTRY", "FlowSpec", "Registry", "flow", "load_flows", "register"]
