"""A run's history: what its step rows keep (each step's delta and cursor), and its cap.

The bytes are counted as they are encoded for the commit, once; the database adds them to
the run's ``history_bytes`` in the checkpoint statement and hands the total back at the
next claim, so the cap holds across hand-offs between processes.
"""

from __future__ import annotations

from typing import Any

import orjson


def encoded(value: Any) -> tuple[orjson.Fragment | None, int]:
    """``value`` as the JSON the database will store, and its size in bytes."""
    if value is None:
        return None, 0
    raw = orjson.dumps(value)
    return orjson.Fragment(raw), len(raw)


class History:
    __slots__ = ("cap", "used")

    def __init__(self, used: int, cap: int) -> None:
        self.used = used
        self.cap = cap

    def fits(self, size: int) -> bool:
        return self.used + size <= self.cap

    def add(self, size: int) -> None:
        self.used += size

    def overflow_message(self, node: str, size: int) -> str:
        return (
            f"node '{node}''s step would bring the run's history to {self.used + size} bytes, "
            f"over the {self.cap}-byte cap (MAX_HISTORY_BYTES)"
        )
