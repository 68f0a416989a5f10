"""The shared store: PocketFlow's ``shared`` dict, kept as JSON one top-level key at a time.

Each step works on a private copy; after it, the copy is diffed against the committed
JSON to get the step's delta. A step whose thread was abandoned keeps writing to its
own copy, which is simply dropped.

A delta is ``{"set": {key: value}, "add": {key: [items]}, "del": [key]}``: ``add`` holds
the items a step appended to a list (so a list that grows by one item a step costs one
item a step, not the whole list again); it is left out when empty, and deltas written
before it existed (``set`` and ``del`` only) replay unchanged.
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
    add: dict[str, bytes] = field(default_factory=dict)  # key -> JSON array of appended items
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.deleted)

    def to_json(self) -> dict[str, Any] | None:
        if not self:
            return None
        out: dict[str, Any] = {"set": {k: orjson.Fragment(v) for k, v in self.set.items()}}
        if self.add:
            out["add"] = {k: orjson.Fragment(v) for k, v in self.add.items()}
        out["del"] = self.deleted
        return out


def appended(old: bytes | None, new: bytes) -> bytes | None:
    """The JSON array of the items ``new`` appends to the list ``old``, or None if ``new``
    is not ``old`` with items appended.

    Both are orjson's compact encoding, so a list ``[a,b]`` grown to ``[a,b,c]`` is the
    same bytes up to the old closing bracket, then a comma: the old items are complete JSON
    values there (a number, string, array or object can't run on past a comma at depth 1).
    """
    if old is None or len(new) <= len(old) or not old.startswith(b"["):
        return None
    if old == b"[]":
        return new if new.startswith(b"[") else None
    head = len(old) - 1  # old without its closing bracket
    if new[head] != 0x2C or not new.startswith(old[:head]):  # 0x2C: ","
        return None
    return b"[" + new[head + 1 :]


def extend(old: bytes, items: bytes) -> bytes:
    """The list ``old`` with the JSON array ``items`` appended, as orjson would encode it."""
    if items == b"[]":
        return old
    if old == b"[]":
        return items
    if not old.startswith(b"[") or not items.startswith(b"["):
        raise ValueError("an 'add' delta applies to lists only")
    return old[:-1] + b"," + items[1:]


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
            old = self._bytes.get(key)
            if old != raw:
                items = appended(old, raw)
                if items is None:
                    delta.set[key] = raw
                else:
                    delta.add[key] = items
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
        for key, items in delta.add.items():
            self._bytes[key] = extend(self._bytes[key], items)
        for key in delta.deleted:
            self._bytes.pop(key, None)

    def apply_json(self, delta: dict[str, Any] | None) -> None:
        """Replay a delta read back from the database."""
        if not delta:
            return
        for key, value in delta.get("set", {}).items():
            self._bytes[key] = strict_dumps(value)
        for key, items in delta.get("add", {}).items():
            self._bytes[key] = extend(self._bytes[key], strict_dumps(items))
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


def apply_delta(working: dict[str, Any], delta: dict[str, Any]) -> None:
    """Apply a delta as JSON (``set``, ``add``, ``del``) to a plain working copy."""
    working.update(delta.get("set") or {})
    for key, items in (delta.get("add") or {}).items():
        working[key] = [*working.get(key, []), *items]
    for key in delta.get("del") or []:
        working.pop(key, None)


def merge_deltas(first: dict[str, Any] | None, then: dict[str, Any]) -> dict[str, Any]:
    """One delta with the effect of ``first`` followed by ``then`` (``then`` sets only)."""
    out = {"set": dict((first or {}).get("set") or {}), "del": list((first or {}).get("del") or [])}
    adds = dict((first or {}).get("add") or {})
    for key, value in (then.get("set") or {}).items():
        out["set"][key] = value
        adds.pop(key, None)
        if key in out["del"]:
            out["del"].remove(key)
    if adds:
        out["add"] = adds
    return out
