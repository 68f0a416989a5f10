"""Triage of a request: score it, route it, let a reviewer decide, notify."""

from __future__ import annotations

from pocketflow import Node

from nodes.control import mark


class Score(Node):
    """Score = amount / 100 + 25 per flag.

    Routes ``approve`` below 20, ``review`` below 60, ``reject`` otherwise.
    """

    def prep(self, shared):
        return shared["amount"], list(shared.get("flags") or [])

    def exec(self, prep_res):
        amount, flags = prep_res
        return round(amount / 100 + 25 * len(flags), 2)

    def post(self, shared, prep_res, exec_res):
        shared["score"] = exec_res
        mark(shared, "score")
        if exec_res < 20:
            return "approve"
        return "review" if exec_res < 60 else "reject"


class Review(Node):
    """A reviewer's rules: ``vip`` approves, ``fraud`` rejects, anything else escalates.

    ``escalate`` has no successor in the triage flow: the run ends there.
    """

    def prep(self, shared):
        return list(shared.get("flags") or [])

    def exec(self, flags):
        if "vip" in flags:
            return "approve"
        return "reject" if "fraud" in flags else "escalate"

    def post(self, shared, prep_res, exec_res):
        mark(shared, f"review:{exec_res}")
        if exec_res == "escalate":
            shared["decision"] = "escalated"
        return exec_res


class Decide(Node):
    """Record the decision ``decision``."""

    def __init__(self, decision: str) -> None:
        super().__init__()
        self.decision = decision

    def post(self, shared, prep_res, exec_res):
        shared["decision"] = self.decision
        mark(shared, self.decision)


class Notify(Node):
    """Compose the message sent to the customer."""

    def prep(self, shared):
        return shared.get("customer", "customer"), shared["decision"]

    def exec(self, prep_res):
        customer, decision = prep_res
        return f"Dear {customer}, your request was {decision}."

    def post(self, shared, prep_res, exec_res):
        shared["message"] = exec_res
        mark(shared, "notify")
