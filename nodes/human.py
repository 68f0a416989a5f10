"""``AskHuman``: a node whose ``exec`` is a person's answer.

Its ``prep`` returns the request (DESIGN.md section 10): a JSON object that may hold
``prompt``, ``schema`` (a JSON Schema for the answer) and ``timeout`` (seconds). Under
pocketrun the run commits after ``prep``, waits holding nothing, and when
``POST /v1/runs/{id}/resume`` delivers an answer that fits the schema, ``post(shared,
prep_res, answer)`` runs and routes as usual; ``prep`` never runs again. Under plain
``pocketflow`` there is nobody to wait for, so ``exec`` calls ``ask``, which reads the
answer from the terminal; override it (tests do) to answer some other way.

Subclass it and override ``prep`` to build the request from the shared store and ``post``
to use the answer; by default the answer goes to ``shared[key]`` and, if it is an object
with a string ``action``, that action routes.
"""

from __future__ import annotations

import json
from typing import Any

from pocketflow import Node


class AskHuman(Node):
    def __init__(
        self,
        prompt: str = "",
        *,
        schema: dict[str, Any] | None = None,
        timeout: float | None = None,
        key: str = "answer",
    ) -> None:
        super().__init__()
        self.prompt = prompt
        self.schema = schema
        self.timeout = timeout
        self.key = key

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {"prompt": self.prompt}
        if self.schema is not None:
            request["schema"] = self.schema
        if self.timeout is not None:
            request["timeout"] = self.timeout
        return request

    def exec(self, prep_res: dict[str, Any]) -> Any:
        return self.ask(prep_res)

    def ask(self, request: dict[str, Any]) -> Any:
        """The answer without pocketrun: a line from the terminal (JSON if it parses)."""
        text = input(f"{request.get('prompt') or 'answer'}: ")
        try:
            return json.loads(text)
        except ValueError:
            return text

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared[self.key] = exec_res
        if isinstance(exec_res, dict) and isinstance(exec_res.get("action"), str):
            return exec_res["action"]
        return None


def asks_human(node: Any) -> bool:
    """Does pocketrun put the run in ``waiting`` at this node instead of calling ``exec``?"""
    return isinstance(node, AskHuman)
