"""wordcount: a BatchNode over documents, then a BatchFlow over per-chunk params."""

from __future__ import annotations

from pocketflow import BatchFlow, Flow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes.text import Chunk, ChunkWords, CountWords, chunk_params


class WordcountIn(BaseModel):
    documents: list[str] = Field(
        default_factory=lambda: ["the quick brown fox", "jumps over the lazy dog"],
        max_length=1000,
    )
    chunk_size: int = Field(2, ge=1, le=1000)


class PerChunk(BatchFlow):
    """Runs its inner flow once per chunk, with params ``{"chunk": i}``."""

    def prep(self, shared):
        return chunk_params(shared)


def build() -> Flow:
    count, chunk = CountWords(), Chunk()
    count >> chunk >> PerChunk(start=ChunkWords())
    return Flow(start=count)


register(
    "wordcount",
    build,
    input=WordcountIn,
    output=["totals", "top", "per_doc", "chunk_words"],
    description=(
        "Counts words per document (BatchNode) and per chunk of `chunk_size` documents "
        "(BatchFlow with one param set per chunk)."
    ),
)
