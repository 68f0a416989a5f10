"""The shared store: PocketFlow's ``shared`` dict, kept as JSON one top-level key at a time.

Each step works on a private copy; after it, the copy is diffed against the committed
JSON to get the step's delta. A step whose thread was abandoned keeps writing to its
own copy, which is simply dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from core.jsonutil import strict_dumps


class StoreError(Exception):
    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message


@dataclass(slots=True)
class Delta:
    set: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.set or self.deleted)

    def to_json(self) -> dict[str, Any] | None:
        if not self:
            return None
        return {"set": {k: orjson.Fragment(v) for k, v in self.set.items()}, "del": self.deleted}


class SharedStore:
    """The committed store of one run, as JSON bytes per top-level key."""

    def __init__(self, values: dict[str, Any] | None = None, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._bytes: dict[str, bytes] = {
            key: strict_dumps(value) for key, value in (values or {}).items()
        }

    @classmethod
    def from_raw(cls, values: dict[str, bytes], *, max_bytes: int) -> SharedStore:
        """A store from JSON bytes per key, as another copy (Redis) keeps them."""
        store = cls(max_bytes=max_bytes)
        store._bytes = values
        return store

    def working_copy(self) -> dict[str, Any]:
        return {key: orjson.loads(raw) for key, raw in self._bytes.items()}

    def diff(self, working: dict[str, Any], node: str) -> Delta:
        """The step's changes; raises StoreError naming the key and node it can't store."""
        delta = Delta()
        size = 0
        for key, value in working.items():
            if not isinstance(key, str):
                raise StoreError(
                    "unserializable",
                    f"node '{node}' set shared key {key!r}, but shared keys must be strings",
                )
            try:
                raw = strict_dumps(value)
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise StoreError(
                    "unserializable",
                    f"node '{node}' set shared['{key}'] to a value that can't be stored as "
                    f"JSON ({type(value).__name__}): {exc}",
                ) from None
            size += len(raw)
            if self._bytes.get(key) != raw:
                delta.set[key] = raw
        delta.deleted = [key for key in self._bytes if key not in working]
        if size > self.max_bytes:
            raise StoreError(
                "store_too_large",
                f"after node '{node}' the shared store is {size} bytes, over the "
                f"{self.max_bytes}-byte cap",
            )
        return delta

    def apply(self, delta: Delta) -> None:
        self._bytes.update(delta.set)
        for key in delta.deleted:
            self._bytes.pop(key, None)

    def apply_json(self, delta: dict[str, Any] | None) -> None:
        """Replay a delta read back from the database."""
        if not delta:
            return
        for key, value in delta.get("set", {}).items():
            self._bytes[key] = strict_dumps(value)
        for key in delta.get("del", []):
            self._bytes.pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        return {key: orjson.Fragment(raw) for key, raw in self._bytes.items()}

    def to_dict(self) -> dict[str, Any]:
        return self.working_copy()

    def pick(self, keys: list[str] | None) -> dict[str, Any]:
        if keys is None:
            return self.to_dict()
        return {key: orjson.loads(self._bytes[key]) for key in keys if key in self._bytes}
