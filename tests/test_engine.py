"""The engine's limits and controls, on both databases: every way a run ends besides success,
leases that fence out a second holder, and what nodes may ask about their step."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pocketflow import AsyncBatchNode, AsyncFlow, AsyncNode, AsyncParallelBatchNode, Flow, Node
from pydantic import BaseModel

from core.context import step_key
from core.jsonutil import strict_dumps
from db.store import RunStore
from flows.registry import REGISTRY, Registry, register
from nodes import named
from nodes.control import SetKey
from tests.edge_flows import run_pocketflow
from tests.support import TERMINAL
from tests.test_equivalence import (
    advance_once,
    create_run,
    new_engine,
    run_row,
    settings_for,
    step_rows,
)
from workers.engine import Outcome
from workers.local import LocalExecutor
from workers.store import SharedStore

pytestmark = pytest.mark.filterwarnings("ignore:Flow ends")

# ----------------------------------------------------------------------------------------
# flows of this module, in a registry of their own

LOCAL = Registry()


class RecordKey(Node):
    """Records the step key it sees in exec (a pool thread) and in post."""

    def exec(self, prep_res):
        return step_key()

    def post(self, shared, prep_res, exec_res):
        shared["keys"] = [*shared.get("keys", []), [exec_res, step_key()]]


class AsyncRecordKey(AsyncNode):
    async def exec_async(self, prep_res):
        await asyncio.sleep(0)
        return step_key()

    async def post_async(self, shared, prep_res, exec_res):
        shared["keys"] = [*shared.get("keys", []), [exec_res, step_key()]]


def build_keys() -> AsyncFlow:
    first = RecordKey()
    first >> AsyncRecordKey() >> named(Flow(start=RecordKey()), "inner") >> RecordKey()
    return AsyncFlow(start=first)


register("t-keys", build_keys, registry=LOCAL)


class FailsIn(BaseModel):
    fails: list[int] = [2]


class AsyncCurRetry(AsyncNode):
    """Fails while ``cur_retry`` < fails[0]; remembers the cur_retry of every attempt."""

    def __init__(self) -> None:
        super().__init__(max_retries=3, wait=0.001)

    async def prep_async(self, shared):
        self.seen = []
        return shared["fails"][0]

    async def exec_async(self, fails):
        self.seen.append(self.cur_retry)
        await asyncio.sleep(0)
        if self.cur_retry < fails:
            raise RuntimeError(f"attempt {self.cur_retry}")
        return self.cur_retry

    async def exec_fallback_async(self, prep_res, exc):
        return f"fallback after {self.cur_retry}"

    async def post_async(self, shared, prep_res, exec_res):
        shared["single"] = {"seen": self.seen, "result": exec_res}


class _ItemRetries:
    def _items(self, shared):
        self.seen = []
        return [[i, f] for i, f in enumerate(shared["fails"])]

    async def _attempt(self, item):
        # one node object serves every item: read cur_retry as exec starts, before any await
        index, fails = item
        retry = self.cur_retry
        self.seen.append([index, retry])
        await asyncio.sleep(0.001 * (len(self.seen) % 3))
        if retry < fails:
            raise RuntimeError(f"item {index} attempt {retry}")
        return [index, retry]

    async def exec_fallback_async(self, item, exc):
        return [item[0], f"fallback at {self.cur_retry}"]


class AsyncBatchCurRetry(_ItemRetries, AsyncBatchNode):
    def __init__(self) -> None:
        super().__init__(max_retries=3)

    async def prep_async(self, shared):
        return self._items(shared)

    async def exec_async(self, item):
        return await self._attempt(item)

    async def post_async(self, shared, prep_res, exec_res):
        shared["batch"] = {"seen": self.seen, "result": exec_res}


class AsyncParallelCurRetry(_ItemRetries, AsyncParallelBatchNode):
    def __init__(self) -> None:
        super().__init__(max_retries=3)

    async def prep_async(self, shared):
        return self._items(shared)

    async def exec_async(self, item):
        return await self._attempt(item)

    async def post_async(self, shared, prep_res, exec_res):
        shared["parallel"] = {"seen": sorted(self.seen), "result": exec_res}


def build_async_retries() -> AsyncFlow:
    single = AsyncCurRetry()
    single >> AsyncBatchCurRetry() >> AsyncParallelCurRetry()
    return AsyncFlow(start=single)


register("t-async-retries", build_async_retries, input=FailsIn, registry=LOCAL)

LATE_WRITE_DONE = threading.Event()


class LateWriter(Node):
    """Sleeps past the step timeout, then writes to the store it was given."""

    def prep(self, shared):
        return shared

    def exec(self, shared):
        time.sleep(1.0)
        return "late"

    def post(self, shared, prep_res, exec_res):
        shared["late"] = exec_res
        shared["before"] = "overwritten"
        LATE_WRITE_DONE.set()


def build_late() -> Flow:
    first = SetKey("before", 1)
    first >> LateWriter() >> SetKey("never", True)
    return Flow(start=first)


register("t-late", build_late, step_timeout=0.3, registry=LOCAL)


# ----------------------------------------------------------------------------------------
# helpers


async def rebuilt_store(db: RunStore, run_id: uuid.UUID) -> dict[str, Any]:
    """The committed store: the run's input with every committed step's delta applied."""
    run = await run_row(db, run_id)
    store = SharedStore(run["input"], max_bytes=1 << 30)
    for row in await step_rows(db, run_id):
        store.apply_json(row["delta"])
    return store.to_dict()


async def wait_for(predicate, timeout: float = 20, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(interval)


# ----------------------------------------------------------------------------------------
# limits


async def test_run_past_max_steps_fails_with_max_steps_after_exactly_max_steps(db) -> None:
    run_id = await create_run(db, "edge-maxsteps", {})
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    run = await run_row(db, run_id)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "max_steps"
    assert "max_steps=20" in run["error"]["message"]
    rows = await step_rows(db, run_id)
    assert [r["seq"] for r in rows] == list(range(1, 21))
    assert all(r["status"] == "succeeded" for r in rows)
    assert (await rebuilt_store(db, run_id))["spins"] == 20


async def test_max_steps_holds_across_hand_offs(db) -> None:
    run_id = await create_run(db, "edge-maxsteps", {})
    settings = settings_for(db, snapshot_every=7)
    while await advance_once(db, run_id, settings, budget=0) is Outcome.yielded:
        pass
    run = await run_row(db, run_id)
    assert (run["status"], run["error"]["type"], run["seq"]) == ("failed", "max_steps", 20)


async def test_hand_offs_at_checkpoints_do_not_count_toward_the_delivery_cap(db) -> None:
    run_id = await create_run(db, "long", {"steps": 8, "delay": 0})
    settings = settings_for(db, max_deliveries=3)
    while await advance_once(db, run_id, settings, budget=0) is Outcome.yielded:
        pass
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded", run["error"]
    assert run["seq"] == 9  # 9 deliveries, each one making progress


async def test_run_that_keeps_dying_mid_step_hits_the_delivery_cap(db) -> None:
    run_id = await create_run(db, "long", {"steps": 8, "delay": 0})
    settings = settings_for(db, max_deliveries=3)
    assert await advance_once(db, run_id, settings, budget=0) is Outcome.yielded
    for i in range(3):  # three holders claim it and die before their step commits
        assert await db.claim(run_id, f"dead-{i}", 0.01) is not None
        await asyncio.sleep(0.03)
    assert await advance_once(db, run_id, settings) is Outcome.finished
    run = await run_row(db, run_id)
    assert (run["status"], run["error"]["type"], run["seq"]) == ("failed", "delivery_cap", 1)


async def test_node_error_after_retries_fails_run_and_step_with_attempts(db) -> None:
    run_id = await create_run(db, "edge-boom", {})
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    run = await run_row(db, run_id)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "node_error"
    assert run["error"]["node"] == "Boom"
    assert "ValueError" in run["error"]["message"] and "boom" in run["error"]["message"]
    rows = await step_rows(db, run_id)
    assert [(r["node"], r["status"]) for r in rows] == [("Step", "succeeded"), ("Boom", "failed")]
    failed = rows[-1]
    assert failed["attempts"] == 2  # Boom's max_retries: exec ran twice
    assert failed["error"] == run["error"]
    assert failed["delta"] is None
    assert run["current_node"] is None and run["lease_owner"] is None


@pytest.mark.parametrize("kind", ["set", "object", "bytes"])
async def test_unserializable_value_fails_naming_key_and_node(db, kind: str) -> None:
    run_id = await create_run(db, "edge-unserializable", {"kind": kind})
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    run = await run_row(db, run_id)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "unserializable"
    assert run["error"]["node"] == "Pollute"
    assert "'bad'" in run["error"]["message"] and "Pollute" in run["error"]["message"]
    rows = await step_rows(db, run_id)
    assert [(r["node"], r["status"]) for r in rows] == [
        ("Step", "succeeded"),
        ("Pollute", "failed"),
    ]
    assert "bad" not in await rebuilt_store(db, run_id)


async def test_store_over_cap_fails_the_step_that_grew_it(db) -> None:
    cap = 150
    run_id = await create_run(db, "long", {"steps": 100, "delay": 0})
    assert await advance_once(db, run_id, settings_for(db, max_store_bytes=cap)) is (
        Outcome.finished
    )
    run = await run_row(db, run_id)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "store_too_large"
    assert run["error"]["node"] == "Tick"
    assert f"{cap}-byte" in run["error"]["message"]
    rows = await step_rows(db, run_id)
    assert 3 < len(rows) < 100
    assert all(r["status"] == "succeeded" for r in rows[:-1])
    assert rows[-1]["status"] == "failed" and rows[-1]["delta"] is None
    committed = await rebuilt_store(db, run_id)
    assert committed["done"] == len(rows) - 1
    assert sum(len(strict_dumps(v)) for v in committed.values()) <= cap  # what was kept fits


async def test_step_timeout_ends_run_timed_out_and_late_writes_are_discarded(db) -> None:
    LATE_WRITE_DONE.clear()
    run_id = await create_run(db, "t-late", {}, registry=LOCAL)
    engine = new_engine(db, settings_for(db), LOCAL)
    started = time.monotonic()
    assert await engine.advance(run_id) is Outcome.finished
    assert time.monotonic() - started < 0.9  # did not wait for the 1 s node
    run = await run_row(db, run_id)
    assert run["status"] == "timed_out"
    assert run["error"]["type"] == "timed_out"
    assert run["error"]["node"] == "LateWriter"
    rows = await step_rows(db, run_id)
    assert [(r["node"], r["status"]) for r in rows] == [
        ("SetKey", "succeeded"),
        ("LateWriter", "timed_out"),
    ]
    # the abandoned thread finishes and writes to its private copy of the store
    assert await asyncio.to_thread(LATE_WRITE_DONE.wait, 5)
    await asyncio.sleep(0.1)
    engine.threads.shutdown(wait=True)
    assert await rebuilt_store(db, run_id) == {"before": 1}
    after = await run_row(db, run_id)
    assert after["seq"] == 2 and after["status"] == "timed_out"
    assert after["version"] == run["version"]  # nothing was written after the run ended
    assert len(await step_rows(db, run_id)) == 2


async def test_run_deadline_ends_run_timed_out_with_run_timeout(db) -> None:
    run_id = await create_run(db, "long", {"steps": 1000, "delay": 0.03}, run_timeout=0.4)
    started = time.monotonic()
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    assert time.monotonic() - started < 2
    run = await run_row(db, run_id)
    assert run["status"] == "timed_out"
    assert run["error"]["type"] == "run_timeout"
    rows = await step_rows(db, run_id)
    assert 1 <= len(rows) == run["seq"] < 1000
    assert all(r["status"] == "succeeded" for r in rows[:-1])
    # the deadline came between two steps, or cut the last one short: a run_timeout either way
    last = rows[-1]
    assert last["status"] == "succeeded" or last["error"]["type"] == "run_timeout"


async def test_run_deadline_cutting_a_step_short_is_a_run_timeout(db) -> None:
    # one step of 5 s; the 0.3 s run deadline is shorter than the 30 s step timeout
    run_id = await create_run(db, "long", {"steps": 2, "delay": 5}, run_timeout=0.3)
    started = time.monotonic()
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    assert time.monotonic() - started < 2
    run = await run_row(db, run_id)
    assert (run["status"], run["error"]["type"]) == ("timed_out", "run_timeout")
    rows = await step_rows(db, run_id)
    assert [(r["node"], r["status"]) for r in rows] == [("Tick", "timed_out")]
    assert rows[0]["error"]["type"] == "run_timeout"


async def test_run_whose_deadline_passed_while_queued_times_out_without_a_step(db) -> None:
    run_id = await create_run(db, "hello", {"name": "x"}, run_timeout=0.01)
    await asyncio.sleep(0.05)
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    run = await run_row(db, run_id)
    assert (run["status"], run["error"]["type"]) == ("timed_out", "run_timeout")
    assert await step_rows(db, run_id) == []


# ----------------------------------------------------------------------------------------
# cancel


async def test_cancel_of_running_run_stops_it_between_nodes(db) -> None:
    total = 60
    run_id = await create_run(db, "long", {"steps": total, "delay": 0.02})
    executor = LocalExecutor(db, REGISTRY, settings_for(db, concurrency=2, sweep_interval=0.2))
    await executor.start()
    repo = db
    try:
        await executor.submit(run_id)
        await wait_for(lambda: _seq_at_least(db, run_id, 3))
        row = await repo.cancel(run_id)
        assert row["cancel_requested"] is True
        assert row["status"] == "running"  # cooperative: the step in flight finishes
        await wait_for(lambda: _terminal(db, run_id))
    finally:
        await executor.stop()
    run = await run_row(db, run_id)
    assert run["status"] == "cancelled"
    assert run["error"]["type"] == "cancelled"
    rows = await step_rows(db, run_id)
    assert 3 <= len(rows) < total
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["status"] == "succeeded" for r in rows)  # no step was cut in half
    assert (await rebuilt_store(db, run_id))["done"] == len(rows)
    assert run["lease_owner"] is None


async def test_cancel_of_queued_run_is_immediate_and_nothing_runs(db) -> None:
    run_id = await create_run(db, "hello", {"name": "x"})
    row = await db.cancel(run_id)
    assert row["status"] == "cancelled"
    assert row["finished_at"] is not None
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.skipped
    assert await step_rows(db, run_id) == []
    assert (await run_row(db, run_id))["status"] == "cancelled"


async def test_cancel_flag_seen_at_claim_ends_run_before_next_step(db) -> None:
    run_id = await create_run(db, "long", {"steps": 5, "delay": 0})
    settings = settings_for(db)
    assert await advance_once(db, run_id, settings, budget=0) is Outcome.yielded
    assert (await db.cancel(run_id))["status"] == "running"
    assert await advance_once(db, run_id, settings) is Outcome.finished
    run = await run_row(db, run_id)
    assert (run["status"], run["seq"]) == ("cancelled", 1)


async def _seq_at_least(db: RunStore, run_id: uuid.UUID, n: int) -> bool:
    return (await run_row(db, run_id))["seq"] >= n


async def _terminal(db: RunStore, run_id: uuid.UUID) -> bool:
    return (await run_row(db, run_id))["status"] in TERMINAL


# ----------------------------------------------------------------------------------------
# leases


async def test_lease_fences_out_a_second_engine_until_it_expires(db, tmp_path: Path) -> None:
    log = tmp_path / "exec.log"
    run_id = await create_run(db, "edge-counted", {"steps": 2, "delay": 0.8, "log": str(log)})
    settings = settings_for(db, lease_ttl=0.5)
    a = new_engine(db, settings, worker_name="engine-a")
    b = new_engine(db, settings, worker_name="engine-b")
    try:
        task_a = asyncio.create_task(a.advance(run_id))
        claimed_at = time.monotonic()
        await wait_for(lambda: _owned_by(db, run_id, a.owner))
        # A's lease is live: B may not take the run
        assert await b.advance(run_id) is Outcome.skipped
        assert (await run_row(db, run_id))["lease_owner"] == a.owner
        # A is still inside its 0.8 s step when its 0.5 s lease runs out; B takes over
        await asyncio.sleep(max(0.0, claimed_at + 0.6 - time.monotonic()))
        assert not task_a.done()
        task_b = asyncio.create_task(b.advance(run_id))
        await wait_for(lambda: _owned_by(db, run_id, b.owner))
        # A's step ends; its commit is fenced out and it stops without writing
        assert await task_a == Outcome.lost
        assert await task_b == Outcome.finished
    finally:
        a.threads.shutdown(wait=False)
        b.threads.shutdown(wait=False)
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded"
    rows = await step_rows(db, run_id)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert {r["worker"] for r in rows} == {"engine-b"}  # A committed nothing
    assert run["state"]["count"] == 2
    keys = log.read_text().split()
    assert keys.count(f"{run_id}:1") == 2  # A's abandoned exec and B's
    assert keys.count(f"{run_id}:2") == 1


async def test_commit_after_lease_lost_raises_and_writes_nothing(db) -> None:
    from db.store import LeaseLost, StepRecord
    from db.types import utcnow

    run_id = await create_run(db, "hello", {"name": "x"})
    cp = db
    assert await cp.claim(run_id, "a", 0.05) is not None
    assert await cp.claim(run_id, "b", 10) is None  # a's lease is live
    await asyncio.sleep(0.1)
    assert await cp.claim(run_id, "b", 10) is not None
    now = utcnow()
    record = StepRecord(1, "Greet", "succeeded", 1, None, now, now, "a", None, None)
    with pytest.raises(LeaseLost):
        await cp.checkpoint(run_id, "a", 0, 10, record, {"current_node": "x"})
    assert await step_rows(db, run_id) == []
    # b's commit fenced by the same seq succeeds once; a replay of it is fenced out
    record.worker = "b"
    await cp.checkpoint(run_id, "b", 0, 10, record, {})
    with pytest.raises(LeaseLost):
        await cp.checkpoint(run_id, "b", 0, 10, record, {})
    assert [r["seq"] for r in await step_rows(db, run_id)] == [1]


async def _owned_by(db: RunStore, run_id: uuid.UUID, owner: str) -> bool:
    return (await run_row(db, run_id))["lease_owner"] == owner


# ----------------------------------------------------------------------------------------
# flow versions


async def test_run_on_a_graph_hash_no_longer_loaded_fails_flow_changed(db) -> None:
    run_id = await create_run(db, "hello", {"name": "x"}, graph_hash="0" * 16)
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    run = await run_row(db, run_id)
    assert (run["status"], run["error"]["type"]) == ("failed", "flow_changed")
    assert await step_rows(db, run_id) == []


async def test_run_of_a_flow_version_not_loaded_fails_flow_changed(db) -> None:
    run_id = await create_run(db, "hello", {"name": "x"})
    assert await advance_once(db, run_id, settings_for(db), Registry()) is Outcome.finished
    run = await run_row(db, run_id)
    assert (run["status"], run["error"]["type"]) == ("failed", "flow_changed")


# ----------------------------------------------------------------------------------------
# what nodes see


@pytest.mark.parametrize("hand_off", [False, True], ids=["one-engine", "new-engine-per-step"])
async def test_step_key_is_run_id_and_seq_inside_sync_and_async_nodes(db, hand_off) -> None:
    run_id = await create_run(db, "t-keys", {}, registry=LOCAL)
    settings = settings_for(db)
    budget = 0 if hand_off else None
    while await advance_once(db, run_id, settings, LOCAL, budget=budget) is Outcome.yielded:
        pass
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded", run["error"]
    expected = [[f"{run_id}:{seq}"] * 2 for seq in range(1, 5)]
    assert run["state"]["keys"] == expected
    assert step_key() is None  # outside a step


async def test_cur_retry_is_set_on_async_nodes_across_retries(db) -> None:
    run_id = await create_run(db, "t-async-retries", {"fails": [2, 0, 3, 1]}, registry=LOCAL)
    assert await advance_once(db, run_id, settings_for(db), LOCAL) is Outcome.finished
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded", run["error"]
    state = run["state"]
    assert state["single"] == {"seen": [0, 1, 2], "result": 2}
    per_item = [[0, 0], [0, 1], [0, 2], [1, 0], [2, 0], [2, 1], [2, 2], [3, 0], [3, 1]]
    assert state["batch"]["seen"] == per_item
    assert state["parallel"]["seen"] == per_item
    results = [[0, 2], [1, 0], [2, "fallback at 2"], [3, 1]]
    assert state["batch"]["result"] == state["parallel"]["result"] == results
    rows = await step_rows(db, run_id)
    assert [r["attempts"] for r in rows] == [3, 9, 9]


async def test_attempts_count_exec_calls_including_batch_items(db) -> None:
    cases = [
        ("edge-batch-retry", {"fails": [0, 1, 2, 5]}, {"PerItemRetry": 1 + 2 + 3 + 3}),
        ("flaky", {"fail_times": 2}, {"Flaky": 3, "ok": 1}),
        ("edge-fallback", {"value": 1}, {"AlwaysFails": 1, "AlwaysFails#2": 3}),
        ("edge-batchflow-empty", {}, {"NoneItems": 0}),
    ]
    for name, data, expected in cases:
        run_id = await create_run(db, name, data)
        assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
        attempts = {r["node"]: r["attempts"] for r in await step_rows(db, run_id)}
        assert {k: attempts[k] for k in expected} == expected, name


async def test_pocketflow_reference_agrees_on_the_retry_flows(db) -> None:
    """The flows above are plain pocketflow where pocketflow defines the behaviour."""
    store, path = await asyncio.to_thread(run_pocketflow, "edge-batch-retry", {"fails": [0, 5]})
    run_id = await create_run(db, "edge-batch-retry", {"fails": [0, 5]})
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    run = await run_row(db, run_id)
    assert run["state"] == store
    assert [r["node"] for r in await step_rows(db, run_id)] == path
