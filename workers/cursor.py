"""Where a run stands between steps: the nested-flow frames and the next node.

The cursor is plain JSON so that any process can carry a run on from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flows.compiler import ROOT

FORMAT = 1


@dataclass(slots=True)
class Frame:
    flow: str  # the container's node id
    base: dict[str, Any]  # the params its parent gave it
    params: dict[str, Any]  # the params its inner nodes get (base + batch item)
    prep: Any = None
    items: list[dict[str, Any]] | None = None  # batch flows: one params dict per pass
    index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "base": self.base,
            "params": self.params,
            "prep": self.prep,
            "items": self.items,
            "i": self.index,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Frame:
        return cls(
            data["flow"], data["base"], data["params"], data["prep"], data["items"], data["i"]
        )


@dataclass(slots=True)
class Cursor:
    frames: list[Frame] = field(default_factory=list)
    next: str | None = ROOT  # node to run next inside the innermost frame
    last: str | None = None  # the last action returned inside the innermost frame
    final: str | None = None  # the top-level flow's post result, once it ended
    done: bool = False
    # At an AskHuman node: {"node", "request"} (its prep result), plus "answer" once a
    # person answered; the node's post runs with it next.
    wait: dict[str, Any] | None = None
    # Changes to the shared store not committed by a step yet (a delta, workers.store):
    # what a waiting node's prep did, an operator's patch at a retry. The next step's
    # working copy starts with them, so its delta carries them.
    pending: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "v": FORMAT,
            "frames": [f.to_json() for f in self.frames],
            "next": self.next,
            "last": self.last,
            "final": self.final,
            "done": self.done,
        }
        if self.wait is not None:
            out["wait"] = self.wait
        if self.pending is not None:
            out["pending"] = self.pending
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Cursor:
        if not data:
            return cls()
        if data.get("v") != FORMAT:
            raise ValueError(f"checkpoint format {data.get('v')!r} is not {FORMAT}")
        return cls(
            [Frame.from_json(f) for f in data["frames"]],
            data["next"],
            data["last"],
            data.get("final"),
            data.get("done", False),
            data.get("wait"),
            data.get("pending"),
        )
