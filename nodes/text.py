"""Text nodes: greetings and word counts, one document or one chunk at a time."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pocketflow import BatchNode, Node

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


class Greet(Node):
    """``shared[out] = "Hello, <shared[key]>!"``."""

    def __init__(self, key: str = "name", out: str = "greeting") -> None:
        super().__init__()
        self.key, self.out = key, out

    def prep(self, shared):
        return shared[self.key]

    def exec(self, who):
        return f"Hello, {who}!"

    def post(self, shared, prep_res, exec_res):
        shared[self.out] = exec_res


class Upper(Node):
    """Upper-case ``shared[key]`` in place."""

    def __init__(self, key: str = "greeting") -> None:
        super().__init__()
        self.key = key

    def prep(self, shared):
        return shared[self.key]

    def exec(self, text):
        return text.upper()

    def post(self, shared, prep_res, exec_res):
        shared[self.key] = exec_res


class CountWords(BatchNode):
    """One exec per document: ``per_doc`` gets each document's counts, ``totals`` their sum."""

    def prep(self, shared):
        return shared.get("documents") or []

    def exec(self, document):
        return dict(sorted(Counter(words(document)).items()))

    def post(self, shared, prep_res, exec_res):
        shared["per_doc"] = exec_res
        shared["totals"] = merge_counts(exec_res)
        ranked = sorted(shared["totals"].items(), key=lambda kv: (-kv[1], kv[0]))
        shared["top"] = [word for word, _ in ranked[:3]]


class Chunk(Node):
    """Split ``documents`` into chunks of ``chunk_size`` (lists of document indexes)."""

    def prep(self, shared):
        return len(shared.get("documents") or []), shared.get("chunk_size", 2)

    def exec(self, prep_res):
        count, size = prep_res
        return [list(range(i, min(i + size, count))) for i in range(0, count, size)]

    def post(self, shared, prep_res, exec_res):
        shared["chunks"] = exec_res
        shared["chunk_words"] = {}


class ChunkWords(Node):
    """Count the words of the chunk named by the ``chunk`` param (run inside a BatchFlow)."""

    def prep(self, shared):
        index = self.params["chunk"]
        docs = shared.get("documents") or []
        return index, [docs[i] for i in shared["chunks"][index]]

    def exec(self, prep_res):
        index, docs = prep_res
        return index, sum(len(words(d)) for d in docs)

    def post(self, shared, prep_res, exec_res):
        index, count = exec_res
        shared["chunk_words"] = {**shared["chunk_words"], str(index): count}


def chunk_params(shared: dict[str, Any]) -> list[dict[str, int]]:
    """The params of a per-chunk BatchFlow: one ``{"chunk": i}`` per chunk."""
    return [{"chunk": i} for i in range(len(shared.get("chunks") or []))]
