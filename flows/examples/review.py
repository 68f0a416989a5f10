"""review: an agent drafts, a person approves, edits or rejects, the agent goes on."""

from __future__ import annotations

from pocketflow import Flow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes.drafting import AskReviewer, Draft, Finalize, GiveUp


class ReviewIn(BaseModel):
    topic: str = Field("durable workflows", min_length=1, max_length=200)
    rounds: int = Field(3, ge=1, le=10, description="drafts the agent writes before it gives up")
    timeout: float | None = Field(
        None, gt=0, le=30 * 86_400, description="seconds each review may take (default: no limit)"
    )


def build() -> Flow:
    draft, review, finalize = Draft(), AskReviewer(), Finalize()
    draft >> review
    review - "approved" >> finalize
    review - "rejected" >> draft
    review - "exhausted" >> GiveUp()
    return Flow(start=draft)


register(
    "review",
    build,
    input=ReviewIn,
    output=["final", "outcome", "round", "drafts", "reviews"],
    description=(
        "Drafts a note on `topic` and waits for a person: resume with "
        '{"approved": true} to finalize it, {"approved": true, "edit": "..."} to finalize '
        'the edit, or {"approved": false, "edit"?: "a note"} for another draft (at most '
        "`rounds`); each wait ends the run timed_out after `timeout` seconds when set."
    ),
)
