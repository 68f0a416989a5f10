"""A unit of slow work that reports its progress: one tick per visit, looping until done."""

from __future__ import annotations

import time

from pocketflow import Node


class Tick(Node):
    """Sleep ``delay`` seconds, record tick number and progress; ``again`` until ``steps`` ticks."""

    def prep(self, shared):
        return shared.get("done", 0), shared["steps"], shared.get("delay", 0.0)

    def exec(self, prep_res):
        done, _steps, delay = prep_res
        if delay > 0:
            time.sleep(delay)
        return done + 1

    def post(self, shared, prep_res, exec_res):
        steps = prep_res[1]
        shared["done"] = exec_res
        shared["percent"] = round(100 * exec_res / steps, 2)
        shared.setdefault("progress", []).append(exec_res)
        return "again" if exec_res < steps else "finished"
