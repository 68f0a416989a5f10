"""Deltas store what changed (an appended list keeps only the new items), replay exactly,
old deltas still replay, and a run's history is capped (``history_too_large``)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import Text, func, select

from core.jsonutil import roundtrip, strict_dumps
from db.models import steps
from db.store import RunStore
from flows.registry import REGISTRY
from tests.history_flows import HISTORY_FLOWS, build_edits, edit
from tests.test_equivalence import advance_once, create_run, run_row, settings_for, step_rows
from workers.engine import Outcome
from workers.store import SharedStore, appended, extend

pytestmark = pytest.mark.filterwarnings("ignore:Flow ends")

BIG = 1 << 30


def through_json(delta: dict[str, Any] | None) -> dict[str, Any] | None:
    """A delta as the database hands it back: encoded, then parsed."""
    return None if delta is None else orjson.loads(orjson.dumps(delta))


# --- append detection on the bytes --------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "items"),
    [
        ([1, 2], [1, 2, 3], [3]),
        ([], [7, [8]], [7, [8]]),
        (["a"], ["a", "b", "c"], ["b", "c"]),
        ([{"k": [1]}], [{"k": [1]}, {"k": 2}], [{"k": 2}]),
        ([","], [",", "]"], ["]"]),
    ],
)
def test_an_append_is_seen_on_the_bytes_and_keeps_only_the_new_items(old, new, items) -> None:
    found = appended(strict_dumps(old), strict_dumps(new))
    assert found is not None and orjson.loads(found) == items
    assert extend(strict_dumps(old), found) == strict_dumps(new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([12], [1, 2]),  # a longer last number is not an append
        ([1], [1.5, 2]),
        (["a,"], ["a", "b"]),  # a comma inside a string
        (["a"], ["ab", "c"]),
        ([[1]], [[1, 2]]),  # a nested append changes the last item
        ([{"k": 1}], [{"k": 1, "j": 2}]),
        ([1, 2], [1, 2]),
        ([1, 2], [1]),
        ([1, 2], {"a": [1, 2, 3]}),
        ("[1", "[1,2]"),  # strings, not lists
        (None, [1]),
        ({"a": 1}, [{"a": 1}, 2]),
    ],
)
def test_anything_but_an_append_is_not_taken_for_one(old, new) -> None:
    assert appended(None if old is None else strict_dumps(old), strict_dumps(new)) is None


def test_a_step_that_appends_to_a_list_stores_only_the_appended_items() -> None:
    store = SharedStore({"progress": list(range(1000)), "done": 1000}, max_bytes=BIG)
    working = store.working_copy()
    working["progress"].append(1000)
    working["done"] = 1001
    delta = store.diff(working, "Tick")
    assert orjson.loads(orjson.dumps(delta.to_json())) == {
        "set": {"done": 1001},
        "add": {"progress": [1000]},
        "del": [],
    }
    store.apply(delta)
    assert store.to_dict() == working


def test_old_deltas_of_set_and_del_still_replay() -> None:
    store = SharedStore({"a": 1, "b": [1]}, max_bytes=BIG)
    store.apply_json({"set": {"b": [1, 2], "c": "x"}, "del": ["a"]})
    store.apply_json({"set": {}, "del": []})
    store.apply_json(None)
    assert store.to_dict() == {"b": [1, 2], "c": "x"}


@pytest.mark.parametrize("seed", range(40))
def test_random_edits_replayed_from_their_deltas_reproduce_the_store_byte_for_byte(
    seed: int,
) -> None:
    rng = random.Random(seed)
    start = {"a": [1, 2], "b": {"x": [1]}, "log": []}
    live = SharedStore(start, max_bytes=BIG)
    replayed = SharedStore(roundtrip(start), max_bytes=BIG)
    adds = 0
    for _ in range(60):
        working = live.working_copy()
        before = {k: strict_dumps(v) for k, v in working.items()}
        kind = edit(rng, working)
        delta = live.diff(working, "Edit")
        if kind in ("append", "extend") and not delta.set and not delta.deleted:
            (key,) = delta.add
            assert orjson.loads(delta.add[key]) == working[key][len(orjson.loads(before[key])) :]
            adds += 1
        live.apply(delta)
        replayed.apply_json(through_json(delta.to_json()))
        assert live.to_dict() == working
        assert replayed._bytes == live._bytes
    assert adds > 0  # appends did take the cheap form


# --- the engine, on both databases --------------------------------------------------------


async def history_of(db: RunStore, run_id: uuid.UUID, first: int = 1, last: int = 2**31 - 1):
    """Bytes the database keeps of the deltas and cursors of steps ``first..last``."""
    delta = func.coalesce(func.length(steps.c.delta.cast(Text)), 0)
    cursor = func.coalesce(func.length(steps.c.cursor.cast(Text)), 0)
    query = select(func.sum(delta + cursor)).where(
        steps.c.run_id == run_id, steps.c.seq >= first, steps.c.seq <= last
    )
    async with db.sa.read() as conn:
        return int((await conn.execute(query)).scalar_one() or 0)


def reference_edits(data: dict[str, Any]) -> dict[str, Any]:
    shared = roundtrip(data)
    build_edits().run(shared)
    return roundtrip(shared)


async def test_random_edits_rebuilt_from_deltas_at_every_hand_off_match_pocketflow(db) -> None:
    data = {"seed": 7, "i": 0, "n": 120}
    run_id = await create_run(db, "t-edits", data, registry=HISTORY_FLOWS)
    settings = settings_for(db, snapshot_every=1000)  # every rebuild replays every delta
    hand_offs = 0
    while await advance_once(db, run_id, settings, HISTORY_FLOWS, budget=0) is Outcome.yielded:
        hand_offs += 1
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded", run["error"]
    assert hand_offs == data["n"] - 1
    assert run["state"] == reference_edits(data)
    rows = await step_rows(db, run_id)
    assert any("add" in (r["delta"] or {}) for r in rows)
    rebuilt = SharedStore(run["input"], max_bytes=BIG)
    for row in rows:
        rebuilt.apply_json(row["delta"])
    assert rebuilt.to_dict() == run["state"]


async def test_the_long_flow_stores_one_progress_item_per_step(db) -> None:
    run_id = await create_run(db, "long", {"steps": 30, "delay": 0})
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    rows = await step_rows(db, run_id)
    assert [r["delta"]["add"] for r in rows[1:30]] == [{"progress": [n]} for n in range(2, 31)]
    assert rows[0]["delta"]["set"]["progress"] == [1]  # a new key is set whole
    run = await run_row(db, run_id)
    assert run["state"]["progress"] == list(range(1, 31))


async def test_history_bytes_count_what_the_steps_keep_across_hand_offs(db) -> None:
    run_id = await create_run(db, "long", {"steps": 12, "delay": 0})
    settings = settings_for(db)
    while await advance_once(db, run_id, settings, budget=0) is Outcome.yielded:
        pass
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded"
    if db.dialect == "sqlite":  # JSON text as written; PostgreSQL's jsonb prints its own way
        assert run["history_bytes"] == await history_of(db, run_id)
    else:
        assert 0.7 < run["history_bytes"] / await history_of(db, run_id) < 1.3


async def test_a_run_past_max_history_bytes_fails_history_too_large_naming_the_cap(db) -> None:
    cap = 4096
    run_id = await create_run(db, "long", {"steps": 1000, "delay": 0})
    settings = settings_for(db, max_history_bytes=cap, snapshot_every=7)
    while await advance_once(db, run_id, settings, budget=0) is Outcome.yielded:
        pass  # each hand-off reads the total back at its claim
    run = await run_row(db, run_id)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "history_too_large"
    assert run["error"]["node"] == "Tick"
    assert f"{cap}-byte cap (MAX_HISTORY_BYTES)" in run["error"]["message"]
    rows = await step_rows(db, run_id)
    assert 10 < len(rows) < 1000
    assert rows[-1]["status"] == "failed" and rows[-1]["delta"] is None
    assert all(r["status"] == "succeeded" for r in rows[:-1])
    assert run["history_bytes"] <= cap
    rebuilt = SharedStore(run["input"], max_bytes=BIG)
    for row in rows:
        rebuilt.apply_json(row["delta"])
    assert rebuilt.to_dict()["done"] == len(rows) - 1  # the failed step changed nothing


# --- the live copy in Redis ---------------------------------------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_redis_applies_appends_and_every_hand_off_finds_the_store_there(db) -> None:
    from workers.dispatch import redis_client
    from workers.engine import RunEngine
    from workers.redis_store import RedisStore, store_key

    settings = settings_for(db)
    client = redis_client(REDIS_URL)
    live = RedisStore(client, settings)
    run_id = await create_run(db, "long", {"steps": 25, "delay": 0})
    try:
        outcome = Outcome.yielded
        while outcome is Outcome.yielded:
            engine = RunEngine(db, REGISTRY, settings, store_sync=live)
            try:
                outcome = await engine.advance(run_id, budget=0)
            finally:
                engine.threads.shutdown(wait=False)
        await live.flush()
        run = await run_row(db, run_id)
        assert run["status"] == "succeeded"
        seq, values = await live.read(run_id)
        assert (seq, values) == (run["seq"], run["state"])
        assert values["progress"] == list(range(1, 26))
        assert live.stats["rebuilds"] == 0 and live.stats["hits"] == run["seq"] - 1
        # the first step seeds the hash (a new run has none), every later one applies
        assert (live.stats["reseeded"], live.stats["applied"]) == (1, run["seq"] - 1)
    finally:
        await client.delete(store_key(run_id))
        await client.aclose()


async def test_redis_missing_the_list_an_append_needs_is_seeded_again_from_the_process() -> None:
    from core.settings import Settings
    from workers.dispatch import redis_client
    from workers.redis_store import RedisStore, store_key

    client = redis_client(REDIS_URL)
    live = RedisStore(client, Settings())
    run_id = uuid.uuid4()
    key = store_key(run_id)
    store = SharedStore({"progress": [1, 2], "n": 2}, max_bytes=BIG)
    try:
        await live._write_seed(key, 2, store, force=True)
        await client.hdel(key, "k:progress")  # Redis lost one field
        working = store.working_copy()
        working["progress"].append(3)
        working["n"] = 3
        delta = store.diff(working, "Tick")
        assert delta.add
        store.apply(delta)
        await live.committed(run_id, 2, 3, delta, store, False)
        await live.flush()
        assert await live.read(run_id) == (3, {"progress": [1, 2, 3], "n": 3})
    finally:
        await client.delete(key)
        await client.aclose()


# --- must hold: linear history ------------------------------------------------------------


async def test_history_of_a_long_appending_run_grows_linearly(db) -> None:
    """10,000 steps appending to ``progress`` (2,000 on PostgreSQL, to stay quick): bytes
    per step at the end are those at step 100, not a hundred times more."""
    total = 10_000 if db.dialect == "sqlite" else 2_000
    run_id = await create_run(db, "long", {"steps": total, "delay": 0})
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded" and run["seq"] == total + 1
    assert len(run["state"]["progress"]) == total
    early = await history_of(db, run_id, 101, 200) / 100
    late = await history_of(db, run_id, total - 99, total) / 100
    assert late / early < 1.5, (early, late)
    assert run["history_bytes"] < 400 * total  # all told, a few hundred bytes a step
