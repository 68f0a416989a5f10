"""Random edits of a shared store, for the history tests: appends, replacements,
truncations, nested changes and deletes, deterministic per (seed, step)."""

from __future__ import annotations

import random
from typing import Any

from pocketflow import Flow, Node

from flows.registry import Registry, register

KEYS = ["a", "b", "c", "log"]
EDITS = ["append", "append", "append", "extend", "replace", "truncate", "clear", "nested"]
EDITS += ["delete", "scalar", "insert", "same"]
# strings that look like JSON structure, escapes and non-ASCII: appends must not be fooled
TEXTS = ["", "x", ",", "]", "[", '"', '\\"', "a,]", "}, {", "é", "😀", "\n", "1,2"]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.randrange(-1000, 1000)
    if kind == 1:
        return rng.choice(TEXTS) + str(rng.randrange(10))
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice([0.5, -2.25, 1e-7, 12345.0])
    if kind == 4:
        return rng.choice(TEXTS)
    if kind == 5:
        return rng.randrange(10)
    if kind == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {rng.choice(KEYS + TEXTS): value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return []


def edit(rng: random.Random, shared: dict[str, Any]) -> str:
    """One random change to ``shared``; returns what kind it was."""
    key = rng.choice(KEYS)
    current = shared.get(key)
    kind = rng.choice(EDITS)
    if kind in ("append", "extend"):
        if not isinstance(current, list):
            shared[key] = current = []
        for _ in range(1 if kind == "append" else rng.randrange(1, 4)):
            current.append(value(rng))
    elif kind == "replace":
        shared[key] = [value(rng) for _ in range(rng.randrange(5))]
    elif kind == "truncate" and isinstance(current, list) and current:
        del current[rng.randrange(len(current)) :]
    elif kind == "clear":
        shared[key] = []
    elif kind == "nested" and isinstance(current, list) and current:
        target = current[rng.randrange(len(current))]
        if isinstance(target, list):
            target.append(value(rng, 1))
        elif isinstance(target, dict):
            target[rng.choice(TEXTS)] = value(rng, 1)
        else:
            current[rng.randrange(len(current))] = value(rng, 1)
    elif kind == "insert" and isinstance(current, list):
        current.insert(0, value(rng))
    elif kind == "delete":
        shared.pop(key, None)
    elif kind == "scalar":
        shared[key] = value(rng)
    return kind


def edit_for_step(shared: dict[str, Any]) -> None:
    rng = random.Random(shared["seed"] * 1_000_003 + shared["i"])
    for _ in range(rng.randrange(1, 3)):
        edit(rng, shared)


class RandomEdit(Node):
    """One or two random edits per visit, then ``again`` until ``n`` visits."""

    def post(self, shared, prep_res, exec_res):
        edit_for_step(shared)
        shared["i"] += 1
        return "again" if shared["i"] < shared["n"] else "done"


def build_edits() -> Flow:
    node = RandomEdit()
    node - "again" >> node
    return Flow(start=node)


HISTORY_FLOWS = Registry()
register("t-edits", build_edits, registry=HISTORY_FLOWS, max_steps=10_000)
