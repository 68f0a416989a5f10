"""Reusable PocketFlow nodes: business logic that never knows it runs in a server.

Nodes import only ``pocketflow``, the standard library and ``core.context``. They keep
their state in the shared store (a node object is copied on every visit, so attributes
set while running are lost) and write only JSON values to it.
"""

from __future__ import annotations

from typing import TypeVar

from pocketflow import BaseNode

T = TypeVar("T", bound=BaseNode)


def named(node: T, name: str) -> T:
    """Give a node (or nested flow) a ``name``: its id then uses it instead of the class name."""
    node.name = name  # type: ignore[attr-defined]
    return node


__all__ = ["named"]
