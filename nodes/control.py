"""Generic control nodes: write a value, sleep, leave a trail."""

from __future__ import annotations

import copy
import time
from typing import Any

from pocketflow import Node


def mark(shared: dict[str, Any], label: str, key: str = "trail") -> None:
    """Append ``label`` to the list ``shared[key]`` (created on first use)."""
    shared[key] = [*shared.get(key, []), label]


class SetKey(Node):
    """Store a constant under ``key`` and return ``action`` (None means "default")."""

    def __init__(self, key: str, value: Any, action: str | None = None) -> None:
        super().__init__()
        self.key, self.value, self.action = key, value, action

    def post(self, shared, prep_res, exec_res):
        shared[self.key] = copy.deepcopy(self.value)
        return self.action


class Sleep(Node):
    """Sleep ``shared[key]`` seconds (or ``default`` when the key is missing)."""

    def __init__(self, key: str = "seconds", default: float = 0.0) -> None:
        super().__init__()
        self.key, self.default = key, default

    def prep(self, shared):
        return float(shared.get(self.key, self.default))

    def exec(self, seconds):
        time.sleep(seconds)
        return seconds

    def post(self, shared, prep_res, exec_res):
        shared["slept"] = exec_res
