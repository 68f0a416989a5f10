"""Nodes that fail on purpose: deterministic faults for retries, fallbacks and errors."""

from __future__ import annotations

from pocketflow import Node


class FlakyError(RuntimeError):
    pass


class Flaky(Node):
    """Fails its first ``shared["fail_times"]`` attempts (by ``cur_retry``), then succeeds.

    When every attempt fails, ``exec_fallback`` returns a fallback result instead of raising.
    Routes ``ok`` or ``fallback``.
    """

    def __init__(self, max_retries: int = 3, wait: float = 0.05) -> None:
        super().__init__(max_retries=max_retries, wait=wait)

    def prep(self, shared):
        return shared.get("fail_times", 0)

    def exec(self, fail_times):
        attempt = self.cur_retry + 1
        if self.cur_retry < fail_times:
            raise FlakyError(f"attempt {attempt} of {self.max_retries} failed")
        return {"ok": True, "attempts": attempt}

    def exec_fallback(self, prep_res, exc):
        return {"ok": False, "attempts": self.max_retries, "error": str(exc)}

    def post(self, shared, prep_res, exec_res):
        shared["result"] = exec_res
        return "ok" if exec_res["ok"] else "fallback"


class Boom(Node):
    """Always raises ``ValueError(message)``; no fallback."""

    def __init__(self, message: str = "boom", max_retries: int = 2) -> None:
        super().__init__(max_retries=max_retries)
        self.message = message

    def exec(self, prep_res):
        raise ValueError(self.message)
