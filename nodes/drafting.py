"""A drafting agent that works offline, and the person who reviews its drafts.

``Draft`` writes draft number ``round`` about ``shared["topic"]`` (the reviewer's last
note, ``shared["feedback"]``, shapes the next one) and streams it word by word.
``AskReviewer`` asks a person to approve it, edit it or reject it; ``Finalize`` makes the
approved draft, or the reviewer's edit of it, the ``final`` text; ``GiveUp`` ends the
run when the drafts ran out. The text is deterministic, as a model stand-in should be.
"""

from __future__ import annotations

from typing import Any

from pocketflow import Node

from core.context import emit
from nodes.human import AskHuman

REVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["approved"],
    "properties": {
        "approved": {"type": "boolean"},
        "edit": {"type": "string", "minLength": 1, "maxLength": 10_000},
    },
    "additionalProperties": False,
}


def compose(topic: str, round_: int, feedback: str | None) -> str:
    """Draft ``round_`` about ``topic``; a later one says what it was revised for."""
    body = f"{topic[:1].upper()}{topic[1:]}: what it is, why it matters and what to do next."
    if round_ == 1:
        return body
    revised = f"revised for: {feedback}" if feedback else "rewritten"
    return f"{body} (draft {round_}, {revised})"


class Draft(Node):
    def prep(self, shared: dict[str, Any]) -> tuple[str, int, str | None]:
        return shared["topic"], shared.get("round", 0) + 1, shared.get("feedback")

    def exec(self, prep_res: tuple[str, int, str | None]) -> str:
        text = compose(*prep_res)
        for i, word in enumerate(text.split(" ")):
            emit(word if i == 0 else " " + word)
        return text

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: str) -> None:
        shared["round"] = prep_res[1]
        shared["draft"] = exec_res
        shared.setdefault("drafts", []).append(exec_res)


class AskReviewer(AskHuman):
    """Asks for ``{"approved": bool, "edit"?: str}`` on the current draft, within
    ``shared["timeout"]`` seconds when set. Approved routes ``approved`` (an edit replaces
    the draft); rejected routes ``rejected`` (an edit is the note for the next draft), or
    ``exhausted`` once ``shared["rounds"]`` drafts were rejected."""

    def __init__(self) -> None:
        super().__init__(schema=REVIEW_SCHEMA, key="review")

    def prep(self, shared: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "prompt": (
                f"Draft {shared['round']} of at most {shared['rounds']}: approve it, "
                f"edit it or reject it. {shared['draft']}"
            ),
            "schema": self.schema,
        }
        if shared.get("timeout"):
            request["timeout"] = shared["timeout"]
        return request

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: dict[str, Any]) -> str:
        shared.setdefault("reviews", []).append(exec_res)
        if exec_res["approved"]:
            shared["edit"] = exec_res.get("edit")
            return "approved"
        shared["feedback"] = exec_res.get("edit")
        return "rejected" if shared["round"] < shared["rounds"] else "exhausted"


class Finalize(Node):
    def prep(self, shared: dict[str, Any]) -> tuple[str, str | None]:
        return shared["draft"], shared.get("edit")

    def exec(self, prep_res: tuple[str, str | None]) -> str:
        draft, edit = prep_res
        return (edit or draft).strip()

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: str) -> None:
        shared["final"] = exec_res
        shared["outcome"] = "edited" if prep_res[1] else "approved"


class GiveUp(Node):
    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["final"] = None
        shared["outcome"] = "rejected"
