"""A stand-in for a language model that streams its answer word by word, offline.

``FakeModel`` answers ``shared["prompt"]`` with a fixed reply built from it, emitting
each word as it "generates" it (``core.context.emit``), ``shared["delay"]`` seconds apart
(default: the node's ``delay``). With
``shared["fail_first"]`` its first attempt breaks off halfway with an error, as a model
call that times out would, and the node's retry streams the answer again from the start.
"""

from __future__ import annotations

import time

from pocketflow import Node

from core.context import emit


class ModelError(RuntimeError):
    pass


def reply_to(prompt: str) -> list[str]:
    return f"You asked: {prompt}. Here is a considered answer, one word at a time.".split()


class FakeModel(Node):
    def __init__(self, delay: float = 0.02, max_retries: int = 2) -> None:
        super().__init__(max_retries=max_retries)
        self.delay = delay

    def prep(self, shared):
        delay = float(shared.get("delay", self.delay))
        return str(shared.get("prompt", "")), bool(shared.get("fail_first", False)), delay

    def exec(self, prep_res):
        prompt, fail_first, delay = prep_res
        words = reply_to(prompt)
        for i, word in enumerate(words):
            if fail_first and self.cur_retry == 0 and i == len(words) // 2:
                raise ModelError("the model's stream broke off")
            emit(word if i == 0 else " " + word)
            time.sleep(delay)
        return " ".join(words)

    def post(self, shared, prep_res, exec_res):
        shared["answer"] = exec_res
