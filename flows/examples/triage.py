"""triage: branching on actions (approve / review / reject), with an action that ends the run."""

from __future__ import annotations

from pocketflow import Flow
from pydantic import BaseModel, Field

from flows.registry import register
from nodes import named
from nodes.triage import Decide, Notify, Review, Score


class TriageIn(BaseModel):
    amount: float = Field(..., ge=0, le=1_000_000_000)
    flags: list[str] = Field(default_factory=list, max_length=20)
    customer: str = Field("customer", min_length=1, max_length=100)


def build() -> Flow:
    score, review, notify = Score(), Review(), Notify()
    approve = named(Decide("approved"), "approve")
    reject = named(Decide("rejected"), "reject")
    score - "approve" >> approve
    score - "review" >> review
    score - "reject" >> reject
    review - "approve" >> approve
    review - "reject" >> reject
    # review - "escalate": no successor, the run ends with decision "escalated"
    approve >> notify
    reject >> notify
    return Flow(start=score)


register(
    "triage",
    build,
    input=TriageIn,
    output=["decision", "score", "message", "trail"],
    description=(
        "Scores a request (amount / 100 + 25 per flag) and routes it: approve below 20, "
        "reject from 60, otherwise review (flag 'vip' approves, 'fraud' rejects, "
        "anything else escalates and ends the run without a message)."
    ),
)
