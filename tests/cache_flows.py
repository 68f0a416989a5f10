"""Flows whose node opts in to the node cache; each exec appends a line to ``log``."""

from __future__ import annotations

import asyncio

from pocketflow import AsyncFlow, AsyncNode, Flow, Node
from pydantic import BaseModel

from flows.registry import register


def _append(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line + "\n")


class Question(BaseModel):
    q: str
    log: str


class Answer(Node):
    cache_ttl = 60

    def prep(self, shared):
        return {"q": shared["q"], "log": shared["log"]}

    def cache_key(self, prep_res):
        return prep_res["q"]

    def exec(self, prep_res):
        _append(prep_res["log"], prep_res["q"])
        return f"answer to {prep_res['q']}"

    def post(self, shared, prep_res, exec_res):
        shared["answer"] = exec_res


class ShortAnswer(Answer):
    cache_ttl = 1


class AsyncAnswer(AsyncNode):
    """No cache_key: the key is prep_res as canonical JSON."""

    cache_ttl = 60

    async def prep_async(self, shared):
        return {"q": shared["q"], "log": shared["log"]}

    async def exec_async(self, prep_res):
        await asyncio.to_thread(_append, prep_res["log"], prep_res["q"])
        return {"text": f"async answer to {prep_res['q']}"}

    async def post_async(self, shared, prep_res, exec_res):
        shared["answer"] = exec_res["text"]


class Failing(Answer):
    def exec(self, prep_res):
        super().exec(prep_res)
        raise RuntimeError("the service said no")


register("cached", lambda: Flow(start=Answer()), input=Question, mode="background")
register("cached-short", lambda: Flow(start=ShortAnswer()), input=Question, mode="background")
register("cached-async", lambda: AsyncFlow(start=AsyncAnswer()), input=Question, mode="background")
register("cached-failing", lambda: Flow(start=Failing()), input=Question, mode="background")
