"""Purpose-built flows that exercise every PocketFlow semantic pocketrun must reproduce.

Importing this module registers flows named ``edge-*`` in the global registry. Each is a
pure function of its input (no randomness, no clock values in the store), so a pocketrun
run can be compared with a raw ``pocketflow`` run of the same factory:

* ``EDGE_FLOWS`` and ``EXAMPLE_INPUTS`` list ``(flow name, input)`` pairs that succeed;
* ``run_pocketflow(name, input)`` runs a flow with plain pocketflow and returns the final
  store (as a JSON round trip returns it) and the node path (ids of the steps, in order).

Flows meant to fail or to be stopped are registered but not listed: ``edge-maxsteps``
(never ends; max_steps=20), ``edge-unserializable`` (puts a non-JSON value in the store),
``edge-boom`` (raises ValueError("boom"), max_retries=2) and ``edge-slow`` with a large
``seconds`` (step_timeout=1). ``edge-counted`` appends ``"{step_key}\\n"`` to the file
``log`` on every exec, for counting executions across crashes.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pocketflow import (
    AsyncBatchFlow,
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    BatchNode,
    Flow,
    Node,
)
from pydantic import BaseModel, Field, field_validator

import flows.examples  # noqa: F401  (registers the example flows EXAMPLE_INPUTS names)
from core.context import step_key
from core.jsonutil import roundtrip
from flows.registry import REGISTRY, register
from nodes import named
from nodes.control import Sleep, mark
from nodes.faults import Boom
from nodes.numbers import Add, Multiply

# ----------------------------------------------------------------------------------------
# small building blocks


class Step(Node):
    """Leave ``label`` on the trail and return ``action`` (None: "default")."""

    def __init__(self, label: str, action: str | None = None) -> None:
        super().__init__()
        self.label, self.action = label, action

    def post(self, shared, prep_res, exec_res):
        mark(shared, self.label)
        return self.action


class AsyncStep(AsyncNode):
    def __init__(self, label: str, action: str | None = None) -> None:
        super().__init__()
        self.label, self.action = label, action

    async def exec_async(self, prep_res):
        await asyncio.sleep(0)

    async def post_async(self, shared, prep_res, exec_res):
        mark(shared, self.label)
        return self.action


class ValueIn(BaseModel):
    value: int = Field(2, ge=-1_000_000, le=1_000_000)


# ----------------------------------------------------------------------------------------
# edge-params: params set on the top flow reach every node, nested flows included


class ReadParams(Node):
    """Multiply ``value`` by the ``factor`` param; record the params this node saw."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def prep(self, shared):
        return shared["value"], dict(self.params)

    def exec(self, prep_res):
        value, params = prep_res
        return value * params["factor"]

    def post(self, shared, prep_res, exec_res):
        shared["value"] = exec_res
        shared["seen"] = {**shared.get("seen", {}), self.label: dict(sorted(prep_res[1].items()))}


def build_params() -> Flow:
    inner_node = ReadParams("inner")
    inner = named(Flow(start=inner_node), "inner")
    # overwritten at run time: a parent flow sets its own params on every child it runs
    inner.set_params({"factor": 100, "ignored": True})
    first = ReadParams("first")
    first >> inner >> ReadParams("last")
    top = Flow(start=first)
    top.set_params({"factor": 3, "tag": "top"})
    return top


register("edge-params", build_params, input=ValueIn, description="params from set_params")


# ----------------------------------------------------------------------------------------
# edge-batchflow: a BatchFlow's param dicts merge over the flow's params


class WordsIn(BaseModel):
    words: list[str] = Field(default_factory=lambda: ["x", "y", "z"], max_length=100)


class PerWord(BatchFlow):
    def prep(self, shared):
        return [{"i": i, "word": w} for i, w in enumerate(shared["words"])]

    def post(self, shared, prep_res, exec_res):
        shared["batches"] = len(prep_res)
        shared["batch_post_exec_res"] = exec_res  # always None for a BatchFlow
        return "next"


class Tag(Node):
    def prep(self, shared):
        return dict(self.params)

    def exec(self, params):
        return f"{params['base']}:{params['i']}:{params['word']}"

    def post(self, shared, prep_res, exec_res):
        shared["tagged"] = [*shared.get("tagged", []), exec_res]


class Visit(Node):
    def post(self, shared, prep_res, exec_res):
        shared["visits"] = shared.get("visits", 0) + 1
        shared["last_word"] = self.params["word"]


def build_batchflow() -> Flow:
    tag = Tag()
    tag >> Visit()
    batch = PerWord(start=tag)
    batch - "next" >> Step("after-batch")
    top = Flow(start=batch)
    top.set_params({"base": 10, "word": "unset"})
    return top


register("edge-batchflow", build_batchflow, input=WordsIn, description="BatchFlow over params")


# ----------------------------------------------------------------------------------------
# edge-batchflow-empty: BatchFlows whose prep returns [] or None; a BatchNode over None


class EmptyBatch(BatchFlow):
    def prep(self, shared):
        return []


class NoneBatch(BatchFlow):
    def prep(self, shared):
        return None

    def post(self, shared, prep_res, exec_res):
        shared["none_batch_prep_res"] = prep_res  # [] : BatchFlow turns None into []
        return "default"


class NoneItems(BatchNode):
    def prep(self, shared):
        return None

    def exec(self, item):
        raise AssertionError("a BatchNode over None runs no exec")

    def post(self, shared, prep_res, exec_res):
        shared["none_items_exec_res"] = exec_res


def build_batchflow_empty() -> Flow:
    empty = EmptyBatch(start=Step("never-empty"))
    none = NoneBatch(start=Step("never-none"))
    start = Step("start")
    start >> empty >> none >> NoneItems() >> Step("end")
    return Flow(start=start)


register("edge-batchflow-empty", build_batchflow_empty, description="empty BatchFlows")


# ----------------------------------------------------------------------------------------
# edge-nested-action: a nested flow's post returns the action that routes in the parent


class Gate(Flow):
    def prep(self, shared):
        shared["gate_entered"] = shared.get("gate_entered", 0) + 1
        return {"value_before": shared["value"]}

    def post(self, shared, prep_res, exec_res):
        shared["gate_last_action"] = exec_res
        shared["gate_prep_res"] = prep_res
        return "high" if shared["value"] >= 10 else "low"


def build_nested_action() -> Flow:
    double = Multiply(2)
    double >> Step("inner-end", action="inner-done")  # no successor: ends the nested flow
    gate = named(Gate(start=double), "gate")
    gate - "high" >> Step("high")
    gate - "low" >> Step("low")
    return Flow(start=gate)


register("edge-nested-action", build_nested_action, input=ValueIn, description="flow post routes")


# ----------------------------------------------------------------------------------------
# edge-batch-nested: a nested flow inside a BatchFlow, followed by a node at batch level


class NsIn(BaseModel):
    ns: list[int] = Field(default_factory=lambda: [1, 2, 3], max_length=100)


class PerN(BatchFlow):
    def prep(self, shared):
        return [{"n": n} for n in shared["ns"]]


class InnerPerN(Flow):
    def prep(self, shared):
        return self.params["n"]

    def post(self, shared, prep_res, exec_res):
        shared["inner_posts"] = [*shared.get("inner_posts", []), [prep_res, exec_res]]
        return "after"


class AddN(Node):
    def prep(self, shared):
        return shared.get("total", 0), self.params["n"]

    def exec(self, prep_res):
        total, n = prep_res
        return total + n

    def post(self, shared, prep_res, exec_res):
        shared["total"] = exec_res
        return "added"


class SquareN(Node):
    def post(self, shared, prep_res, exec_res):
        shared["squares"] = [*shared.get("squares", []), self.params["n"] ** 2]
        return "squared"


def build_batch_nested() -> Flow:
    add = AddN()
    add - "added" >> SquareN()
    inner = named(InnerPerN(start=add), "inner")
    inner - "after" >> Step("after-inner")
    return Flow(start=PerN(start=inner))


register("edge-batch-nested", build_batch_nested, input=NsIn, description="flow in BatchFlow")


# ----------------------------------------------------------------------------------------
# edge-async-mix: an AsyncFlow with a sync node, a retrying AsyncNode with a fallback,
# a sync Flow and an AsyncFlow nested inside it


class FailTimesIn(BaseModel):
    fail_times: int = Field(1, ge=0, le=10)


class SyncRetry(Node):
    """A sync node inside an AsyncFlow: fails its first attempt (by ``cur_retry``)."""

    def __init__(self) -> None:
        super().__init__(max_retries=2, wait=0.01)

    def exec(self, prep_res):
        if self.cur_retry == 0:
            raise RuntimeError("first attempt fails")
        return self.cur_retry + 1

    def post(self, shared, prep_res, exec_res):
        shared["sync_attempts"] = exec_res


class AsyncRetry(AsyncNode):
    """Fails its first ``fail_times`` attempts, then succeeds; falls back after 3.

    pocketflow's AsyncNode does not set ``cur_retry``, so attempts are counted on the node
    copy itself (one copy lives for one visit: prep, every exec attempt, post).
    """

    def __init__(self) -> None:
        super().__init__(max_retries=3, wait=0.01)

    async def prep_async(self, shared):
        self.attempts = 0
        return shared["fail_times"]

    async def exec_async(self, fail_times):
        self.attempts += 1
        await asyncio.sleep(0)
        if self.attempts <= fail_times:
            raise RuntimeError(f"async attempt {self.attempts} failed")
        return {"ok": True, "attempts": self.attempts}

    async def exec_fallback_async(self, prep_res, exc):
        return {"ok": False, "attempts": self.attempts, "error": str(exc)}

    async def post_async(self, shared, prep_res, exec_res):
        shared["async_result"] = exec_res
        return "ok" if exec_res["ok"] else "fallback"


class AsyncInner(AsyncFlow):
    async def post_async(self, shared, prep_res, exec_res):
        shared["async_inner_last"] = exec_res
        return "done"


def build_async_mix() -> AsyncFlow:
    sync_flow = named(Flow(start=Step("in-sync-flow")), "syncflow")
    first = AsyncStep("async-inner-1")
    first >> AsyncStep("async-inner-2", action="inner-finished")
    async_inner = named(AsyncInner(start=first), "asyncflow")
    retry = AsyncRetry()
    start = SyncRetry()
    start >> retry
    retry - "ok" >> sync_flow
    retry - "fallback" >> Step("fell-back") >> sync_flow
    sync_flow >> async_inner
    async_inner - "done" >> Step("end")
    return AsyncFlow(start=start)


register("edge-async-mix", build_async_mix, input=FailTimesIn, description="async + sync mix")


# ----------------------------------------------------------------------------------------
# edge-async-batch: AsyncBatchNode, AsyncParallelBatchNode (with per-item fallback) and a
# sync BatchNode in one AsyncFlow


class ItemsIn(BaseModel):
    items: list[str] = Field(default_factory=lambda: ["a", "bad", "c", "d"], max_length=100)


class SeqUpper(AsyncBatchNode):
    async def prep_async(self, shared):
        return shared["items"]

    async def exec_async(self, item):
        await asyncio.sleep(0)
        return item.upper()

    async def post_async(self, shared, prep_res, exec_res):
        shared["upper"] = exec_res


class ParFetch(AsyncParallelBatchNode):
    """Later items sleep less (finish first); an item named ``bad`` always fails."""

    def __init__(self) -> None:
        super().__init__(max_retries=2)

    async def prep_async(self, shared):
        n = len(shared["items"])
        return [[item, n - i] for i, item in enumerate(shared["items"])]

    async def exec_async(self, job):
        item, rank = job
        await asyncio.sleep(0.001 * rank)
        if item == "bad":
            raise ValueError(f"cannot fetch {item}")
        return f"fetched:{item}"

    async def exec_fallback_async(self, job, exc):
        return f"fallback:{job[0]}:{exc}"

    async def post_async(self, shared, prep_res, exec_res):
        shared["fetched"] = exec_res


class Lengths(BatchNode):
    def prep(self, shared):
        return shared["fetched"]

    def exec(self, text):
        return len(text)

    def post(self, shared, prep_res, exec_res):
        shared["lengths"] = exec_res


def build_async_batch() -> AsyncFlow:
    upper = SeqUpper()
    upper >> ParFetch() >> Lengths()
    return AsyncFlow(start=upper)


register("edge-async-batch", build_async_batch, input=ItemsIn, description="async batch nodes")


# ----------------------------------------------------------------------------------------
# edge-async-batchflow: AsyncBatchFlow, then an AsyncParallelBatchFlow (one step in pocketrun)


class KeysIn(BaseModel):
    keys: list[str] = Field(default_factory=lambda: ["k1", "k2", "k3"], max_length=50)


class SeqKeys(AsyncBatchFlow):
    async def prep_async(self, shared):
        shared["par"] = {}
        return [{"key": k, "pos": i} for i, k in enumerate(shared["keys"])]


class AsyncRecord(AsyncNode):
    async def prep_async(self, shared):
        return self.params["key"], self.params["pos"]

    async def exec_async(self, prep_res):
        await asyncio.sleep(0)
        key, pos = prep_res
        return f"{key}@{pos}"

    async def post_async(self, shared, prep_res, exec_res):
        shared["seq"] = [*shared.get("seq", []), exec_res]


class SyncRecord(Node):
    def post(self, shared, prep_res, exec_res):
        shared["seq_sync"] = shared.get("seq_sync", 0) + 1


class ParKeys(AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        n = len(shared["keys"])
        return [{"key": k, "delay": 0.001 * (n - i)} for i, k in enumerate(shared["keys"])]

    async def post_async(self, shared, prep_res, exec_res):
        shared["par"] = dict(sorted(shared["par"].items()))  # completion order hidden
        shared["par_count"] = len(shared["par"])
        return "done"


class ParWrite(AsyncNode):
    """Writes under its own key, so completion order never shows in the store."""

    async def prep_async(self, shared):
        return self.params["key"], self.params["delay"]

    async def exec_async(self, prep_res):
        key, delay = prep_res
        await asyncio.sleep(delay)
        return key * 2

    async def post_async(self, shared, prep_res, exec_res):
        shared["par"][prep_res[0]] = exec_res


def build_async_batchflow() -> AsyncFlow:
    record = AsyncRecord()
    record >> SyncRecord()
    seq = SeqKeys(start=record)
    par = ParKeys(start=ParWrite())
    seq >> par
    par - "done" >> AsyncStep("end")
    return AsyncFlow(start=seq)


register(
    "edge-async-batchflow", build_async_batchflow, input=KeysIn, description="async batch flows"
)


# ----------------------------------------------------------------------------------------
# edge-loop: a two-node cycle that runs N times, then leaves by another action


class LoopIn(BaseModel):
    n: int = Field(4, ge=1, le=1000)


class Body(Node):
    def prep(self, shared):
        return shared.get("acc", 0), shared.get("i", 0)

    def exec(self, prep_res):
        acc, i = prep_res
        return acc + i * i

    def post(self, shared, prep_res, exec_res):
        shared["acc"] = exec_res


class Check(Node):
    def prep(self, shared):
        return shared.get("i", 0), shared["n"]

    def post(self, shared, prep_res, exec_res):
        i, n = prep_res
        shared["i"] = i + 1
        return "again" if i + 1 < n else "done"


def build_loop() -> Flow:
    body, check = Body(), Check()
    body >> check
    check - "again" >> body
    check - "done" >> Step("exit")
    return Flow(start=body)


register("edge-loop", build_loop, input=LoopIn, description="cycle N times then exit")


# ----------------------------------------------------------------------------------------
# edge-nested-loop: the parent's cycle re-enters a nested flow


def build_nested_loop() -> Flow:
    add = Add(1)
    add >> Multiply(2)
    sub = named(Flow(start=add), "sub")
    check = Check()
    sub >> check
    check - "again" >> sub
    check - "done" >> Step("exit")
    return Flow(start=sub)


class NestedLoopIn(LoopIn):
    value: int = Field(0, ge=-1000, le=1000)


register("edge-nested-loop", build_nested_loop, input=NestedLoopIn, description="loop re-enters")


# ----------------------------------------------------------------------------------------
# edge-early-exit: an action with no successor ends a nested flow early; the parent goes
# on by the nested flow's post result (its last action), then ends on an unknown action


class SkipIn(BaseModel):
    skip: bool = True


class Probe(Node):
    def prep(self, shared):
        return shared["skip"]

    def post(self, shared, prep_res, exec_res):
        mark(shared, "probe")
        return "skip" if prep_res else "go"


def build_early_exit() -> Flow:
    probe = Probe()
    probe - "go" >> Step("work") >> Step("inner-last")  # ends with None -> "default"
    # probe - "skip": no successor inside; the nested flow ends and returns "skip"
    inner = named(Flow(start=probe), "inner")
    inner - "skip" >> Step("skipped", action="halt")
    inner >> Step("normal", action="halt")
    parent_end = Step("never")
    for node in (inner.successors["skip"], inner.successors["default"]):
        node - "continue" >> parent_end  # "halt" is not a successor: the run ends there
    return Flow(start=inner)


register("edge-early-exit", build_early_exit, input=SkipIn, description="no-successor exits")


# ----------------------------------------------------------------------------------------
# edge-none-action: None means "default"; an explicit "default" too; an unknown action ends


def build_none_action() -> Flow:
    a = Step("none")  # returns None
    a >> Step("explicit-default", action="default") >> Step("last", action="unused")
    return Flow(start=a)


register("edge-none-action", build_none_action, input=None, description="None -> default")


# ----------------------------------------------------------------------------------------
# edge-fallback: exec_fallback returns a value instead of raising


class AlwaysFails(Node):
    def __init__(self, max_retries: int) -> None:
        super().__init__(max_retries=max_retries, wait=0.01)

    def prep(self, shared):
        return shared["value"]

    def exec(self, value):
        raise RuntimeError(f"failed on {value} (attempt {self.cur_retry + 1})")

    def exec_fallback(self, prep_res, exc):
        return {"fallback": True, "error": str(exc), "cur_retry": self.cur_retry}

    def post(self, shared, prep_res, exec_res):
        shared[f"fallback_{self.max_retries}"] = exec_res
        return "recovered"


def build_fallback() -> Flow:
    once, twice = AlwaysFails(1), AlwaysFails(3)
    once - "recovered" >> twice
    twice - "recovered" >> Step("end")
    return Flow(start=once)


register("edge-fallback", build_fallback, input=ValueIn, description="exec_fallback value")


# ----------------------------------------------------------------------------------------
# edge-batch-retry: a BatchNode retries each item on its own (cur_retry restarts per item)


class FailsIn(BaseModel):
    fails: list[int] = Field(default_factory=lambda: [0, 1, 2, 5], max_length=100)


class PerItemRetry(BatchNode):
    def __init__(self) -> None:
        super().__init__(max_retries=3, wait=0)

    def prep(self, shared):
        return [[i, f] for i, f in enumerate(shared["fails"])]

    def exec(self, item):
        index, fails = item
        if self.cur_retry < fails:
            raise RuntimeError(f"item {index} attempt {self.cur_retry + 1}")
        return {"item": index, "attempts": self.cur_retry + 1}

    def exec_fallback(self, item, exc):
        return {"item": item[0], "fallback": str(exc)}

    def post(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


register(
    "edge-batch-retry",
    lambda: Flow(start=PerItemRetry()),
    input=FailsIn,
    description="per-item retries",
)


# ----------------------------------------------------------------------------------------
# edge-same-class: ids X, X#2, and the count restarts inside a nested flow


def build_same_class() -> Flow:
    inner_add = Add(100)
    inner_add >> Add(1000)
    inner = named(Flow(start=inner_add), "inner")
    first = Add(1)
    first >> Add(10) >> inner >> Multiply(2) >> Multiply(3)
    return Flow(start=first)


register("edge-same-class", build_same_class, input=ValueIn, description="X and X#2 ids")


# ----------------------------------------------------------------------------------------
# edge-tuple: tuples come back as lists; readers must not care which they get


class StoreTuple(Node):
    def prep(self, shared):
        return shared["value"]

    def exec(self, value):
        return (value, value + 1)

    def post(self, shared, prep_res, exec_res):
        shared["pair"] = exec_res
        shared["nested"] = {"pairs": [exec_res, (0, "zero")], "t": ("a", ("b", "c"))}


class ReadTuple(Node):
    def prep(self, shared):
        a, b = shared["pair"]
        first_pair, _ = shared["nested"]["pairs"]
        _, (_, c) = shared["nested"]["t"]
        return a, b, list(first_pair), c

    def exec(self, prep_res):
        a, b, first_pair, c = prep_res
        return {"sum": a + b, "first_pair": first_pair, "c": c}

    def post(self, shared, prep_res, exec_res):
        shared["read"] = exec_res


def build_tuple() -> Flow:
    store = StoreTuple()
    store >> ReadTuple()
    return Flow(start=store)


register("edge-tuple", build_tuple, input=ValueIn, description="tuples become lists")


# ----------------------------------------------------------------------------------------
# edge-mutate: in-place edits of nested values, deleted keys, and a store cleared and rebuilt


class DocIn(BaseModel):
    doc: dict[str, Any] = Field(default_factory=lambda: {"title": "t", "tags": ["a"]})
    tmp: str = "scratch"
    counter: int = 0


class MutateInPlace(Node):
    def post(self, shared, prep_res, exec_res):
        shared["doc"]["tags"].append("b")
        shared["doc"]["meta"] = {"edited": True}
        shared["counter"] += 1
        del shared["tmp"]
        shared["nothing"] = None


class MutateAgain(Node):
    def post(self, shared, prep_res, exec_res):
        shared["doc"]["tags"][0] = "A"
        shared["doc"]["meta"]["edited"] = 2
        shared["counter"] += 1
        shared.pop("nothing")
        shared["tmp"] = "back"


class ClearAndRebuild(Node):
    def post(self, shared, prep_res, exec_res):
        summary = {"tags": list(shared["doc"]["tags"]), "counter": shared["counter"]}
        keys = sorted(shared)
        shared.clear()
        shared["summary"] = summary
        shared["old_keys"] = keys


def build_mutate() -> Flow:
    first = MutateInPlace()
    first >> MutateAgain() >> ClearAndRebuild()
    return Flow(start=first)


register("edge-mutate", build_mutate, input=DocIn, description="in-place edits, deletes, clear")


# ----------------------------------------------------------------------------------------
# edge-maxsteps: a cycle that never ends; stopped by max_steps


class Spin(Node):
    def post(self, shared, prep_res, exec_res):
        shared["spins"] = shared.get("spins", 0) + 1
        return "again"


def build_maxsteps() -> Flow:
    spin = Spin()
    spin - "again" >> spin
    return Flow(start=spin)


register("edge-maxsteps", build_maxsteps, max_steps=20, description="never ends")


# ----------------------------------------------------------------------------------------
# edge-unserializable: the second node puts a non-JSON value in the store (key "bad")


class Opaque:
    pass


class UnserializableIn(BaseModel):
    kind: Literal["set", "object", "bytes"] = "set"


class Pollute(Node):
    def prep(self, shared):
        return shared["kind"]

    def exec(self, kind):
        return {"set": lambda: {1, 2}, "object": Opaque, "bytes": lambda: b"raw"}[kind]()

    def post(self, shared, prep_res, exec_res):
        shared["bad"] = exec_res


def build_unserializable() -> Flow:
    first = Step("before")
    first >> Pollute() >> Step("after")
    return Flow(start=first)


register(
    "edge-unserializable", build_unserializable, input=UnserializableIn, description="not JSON"
)


# ----------------------------------------------------------------------------------------
# edge-boom: raises ValueError("boom") on both attempts; no fallback


def build_boom() -> Flow:
    first = Step("before")
    first >> Boom() >> Step("after")
    return Flow(start=first)


register("edge-boom", build_boom, description="fails with ValueError('boom')")


# ----------------------------------------------------------------------------------------
# edge-slow: one node sleeping `seconds` (step_timeout=1)


class SlowIn(BaseModel):
    seconds: float = Field(5, ge=0, le=600)


def build_slow() -> Flow:
    first = Sleep(key="seconds")
    first >> Step("after")
    return Flow(start=first)


register("edge-slow", build_slow, input=SlowIn, step_timeout=1, description="sleeps `seconds`")


# ----------------------------------------------------------------------------------------
# edge-counted: many steps; each exec appends "{step_key}\n" to the file `log`


class CountedIn(BaseModel):
    steps: int = Field(30, ge=1, le=10_000)
    delay: float = Field(0.2, ge=0, le=10)
    log: str = Field(..., min_length=1)


class Counted(Node):
    def prep(self, shared):
        return shared["log"], shared["delay"], shared.get("count", 0), shared["steps"]

    def exec(self, prep_res):
        log, delay, _, _ = prep_res
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{step_key()}\n")
            fh.flush()
        if delay > 0:
            time.sleep(delay)

    def post(self, shared, prep_res, exec_res):
        count, steps = prep_res[2] + 1, prep_res[3]
        shared["count"] = count
        return "again" if count < steps else "done"


def build_counted() -> Flow:
    counted = Counted()
    counted - "again" >> counted
    counted - "done" >> Step("end")
    return Flow(start=counted)


register(
    "edge-counted",
    build_counted,
    input=CountedIn,
    max_steps=20_100,
    step_timeout=30,
    run_timeout=None,
    description="counts its execs in a file",
)


# ----------------------------------------------------------------------------------------
# inputs for equivalence tests (every one succeeds, quickly)

EDGE_FLOWS: list[tuple[str, dict]] = [
    ("edge-params", {"value": 2}),
    ("edge-batchflow", {"words": ["x", "y", "z"]}),
    ("edge-batchflow", {"words": []}),
    ("edge-batchflow-empty", {}),
    ("edge-nested-action", {"value": 12}),
    ("edge-nested-action", {"value": 3}),
    ("edge-batch-nested", {"ns": [1, 2, 3]}),
    ("edge-async-mix", {"fail_times": 1}),
    ("edge-async-mix", {"fail_times": 5}),
    ("edge-async-batch", {"items": ["a", "bad", "c", "d"]}),
    ("edge-async-batchflow", {"keys": ["k1", "k2", "k3"]}),
    ("edge-loop", {"n": 4}),
    ("edge-loop", {"n": 1}),
    ("edge-nested-loop", {"n": 3, "value": 1}),
    ("edge-early-exit", {"skip": True}),
    ("edge-early-exit", {"skip": False}),
    ("edge-none-action", {"anything": [1, {"x": None}]}),
    ("edge-fallback", {"value": 7}),
    ("edge-batch-retry", {"fails": [0, 1, 2, 5]}),
    ("edge-same-class", {"value": 1}),
    ("edge-tuple", {"value": 5}),
    ("edge-mutate", {}),
    ("edge-slow", {"seconds": 0}),
    ("edge-counted", {"steps": 3, "delay": 0, "log": os.devnull}),
]

EXAMPLE_INPUTS: list[tuple[str, dict]] = [
    ("hello", {"name": "ada"}),
    ("triage", {"amount": 500}),
    ("triage", {"amount": 500, "flags": ["vip"], "customer": "Bo"}),
    ("triage", {"amount": 500, "flags": ["fraud"]}),
    ("triage", {"amount": 1000, "flags": ["new"]}),
    ("triage", {"amount": 10_000}),
    ("flaky", {"fail_times": 0}),
    ("flaky", {"fail_times": 2}),
    ("flaky", {"fail_times": 3}),
    ("wordcount", {}),
    ("wordcount", {"documents": ["a b", "b c", "c d e", "the end"], "chunk_size": 3}),
    ("pipeline", {"value": 1}),
    ("pipeline", {"value": 10}),
    ("fanout", {"items": ["x", "y", "z", "w"], "delay": 0.001}),
    ("long", {"steps": 5, "delay": 0}),
]

FAILING_FLOWS = ["edge-unserializable", "edge-boom"]  # fail under pocketrun (boom: raw too)
UNENDING_FLOWS = ["edge-maxsteps"]  # raw pocketflow would loop forever


# ----------------------------------------------------------------------------------------
# the reference: plain pocketflow, with the node path recorded

_inside_step: contextvars.ContextVar[bool] = contextvars.ContextVar("edge_step", default=False)


@contextmanager
def _record_path() -> Iterator[list[str]]:
    """Patch pocketflow for the duration: every leaf node (and AsyncParallelBatchFlow, one
    step in pocketrun) appends its node id to the returned list when it completes."""
    import pocketflow

    path: list[str] = []
    base_run = pocketflow.BaseNode._run
    async_run = pocketflow.AsyncNode._run_async
    par_run = pocketflow.AsyncParallelBatchFlow._run_async

    def leaf_run(self, shared):
        if isinstance(self, Flow) or _inside_step.get():
            return base_run(self, shared)
        token = _inside_step.set(True)
        try:
            action = base_run(self, shared)
        finally:
            _inside_step.reset(token)
        path.append(self._edge_id)
        return action

    async def leaf_run_async(self, shared, _orig=async_run):
        if _inside_step.get():
            return await _orig(self, shared)
        token = _inside_step.set(True)
        try:
            action = await _orig(self, shared)
        finally:
            _inside_step.reset(token)
        path.append(self._edge_id)
        return action

    async def par_run_async(self, shared):
        return await leaf_run_async(self, shared, _orig=par_run)

    pocketflow.BaseNode._run = leaf_run
    pocketflow.AsyncNode._run_async = leaf_run_async
    pocketflow.AsyncParallelBatchFlow._run_async = par_run_async
    try:
        yield path
    finally:
        pocketflow.BaseNode._run = base_run
        pocketflow.AsyncNode._run_async = async_run
        pocketflow.AsyncParallelBatchFlow._run_async = par_run


# ----------------------------------------------------------------------------------------
# edge-broken-input: an input model whose validator has a bug (raises a non-validation
# error), for checking that a server error still answers problem+json and keeps the
# connection


class BrokenIn(BaseModel):
    value: int = 0

    @field_validator("value")
    @classmethod
    def explode(cls, value: int) -> int:
        if value == 13:
            raise RuntimeError("validator bug")
        return value


def build_broken() -> Flow:
    return Flow(start=Step("only"))


register(
    "edge-broken-input",
    build_broken,
    input=BrokenIn,
    description="input validator raises RuntimeError on value 13",
)


def run_pocketflow(name: str, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Run flow ``name`` on ``data`` with plain pocketflow (no pocketrun involved).

    Returns the final store as a JSON round trip returns it, and the ids of the nodes
    that ran, in order (a nested flow is not a step; an AsyncParallelBatchFlow is one).
    """
    spec = REGISTRY.get(name)
    shared = spec.validate_input(data)
    flow, graph = spec.instantiate()
    for info in graph.nodes.values():
        info.obj._edge_id = info.id  # copies made by Flow._orch keep it
    with _record_path() as path:
        if isinstance(flow, AsyncFlow):
            asyncio.run(flow.run_async(shared))
        else:
            flow.run(shared)
    return roundtrip(shared), list(path)


__all__ = [
    "EDGE_FLOWS",
    "EXAMPLE_INPUTS",
    "FAILING_FLOWS",
    "UNENDING_FLOWS",
    "run_pocketflow",
]
