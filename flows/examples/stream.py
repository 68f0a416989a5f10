"""``stream``: a model's answer streamed word by word, as an LLM call streams tokens."""

from __future__ import annotations

from pocketflow import Flow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes.fake_llm import FakeModel


class StreamIn(BaseModel):
    prompt: str = Field(default="what is pocketrun", max_length=1000)
    fail_first: bool = Field(default=False, description="break off the first attempt")
    delay: float = Field(default=0.02, ge=0, le=1, description="seconds between words")


def build() -> Flow:
    return Flow(start=FakeModel())


register(
    "stream",
    build,
    input=StreamIn,
    output=["answer"],
    description=(
        "A fake model streams its answer word by word (GET /v1/runs/{id}/events); "
        "with `fail_first` its first attempt breaks off and the retry streams again."
    ),
    step_timeout=60,
)
