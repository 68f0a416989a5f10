"""The flow registry, the graph compiler and the built-in example flows."""

from flows import own

own.load()  # before the imports below reach nodes or core: see flows/own.py

from flows.registry import REGISTRY, FlowSpec, Registry, flow, load_flows, register  # noqa: E402

own.release()

__all__ = ["REGISTRY", "FlowSpec", "Registry", "flow", "load_flows", "register"]
