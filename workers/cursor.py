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

    def to_json(self) -> dict[str, Any]:
        return {
            "v": FORMAT,
            "frames": [f.to_json() for f in self.frames],
            "next": self.next,
            "last": self.last,
            "final": self.final,
            "done": self.done,
        }

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
        )
