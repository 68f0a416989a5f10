"""Nodes of the ``evolving`` flow's versions (``tests.versions_v1``, ``tests.versions_v2``).

Each node appends ``"<version>:<name>"`` to ``shared["trail"]``, so a run's output says
which version's nodes ran each step. ``Gate`` holds its step until the file named by
``POCKETRUN_TEST_GATE`` exists, so a test can catch a run at step 3.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pocketflow import Flow, Node

from nodes.human import AskHuman


class Mark(Node):
    def __init__(self, version: str, name: str) -> None:
        super().__init__()
        self.version, self.name = version, name

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["trail"] = [*shared.get("trail", []), f"{self.version}:{self.name}"]


class Gate(Mark):
    def exec(self, prep_res: Any) -> None:
        gate = os.environ.get("POCKETRUN_TEST_GATE")
        deadline = time.monotonic() + 120
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)


class Check(AskHuman):
    """A person looks before the last step (version 2 only)."""

    def __init__(self, version: str) -> None:
        super().__init__("check the work")
        self.version, self.name = version, "check"

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["trail"] = [*shared.get("trail", []), f"{self.version}:check"]


def build(version: str, *, check: bool) -> Flow:
    """a -> b -> c (gated) [-> check] -> d"""
    a, b, c, d = Mark(version, "a"), Mark(version, "b"), Gate(version, "c"), Mark(version, "d")
    a >> b >> c
    if check:
        c >> Check(version) >> d
    else:
        c >> d
    return Flow(start=a)
