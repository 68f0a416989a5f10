"""A run's shared store after step N, rebuilt from its history, equals plain pocketflow's
store after N steps, for every N of every equivalence flow, on both databases.

Each run is handed to a new engine at every checkpoint with a snapshot every 3 steps, so
the rebuild is checked from the input (a step before the latest snapshot) and from a
snapshot plus the deltas after it (the latest step of a run still going).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from db.store import RunStore
from tests.edge_flows import run_pocketflow
from tests.pocketflow_states import pocketflow_states
from tests.test_equivalence import CASE_IDS, CASES, advance_once, create_run, settings_for
from workers.engine import Outcome
from workers.state_history import state_after

pytestmark = pytest.mark.filterwarnings("ignore:Flow ends")

MAX_BYTES = 1 << 24


async def _states(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    # pocketflow_states patches pocketflow and may call asyncio.run: a thread of its own
    return await asyncio.to_thread(pocketflow_states, name, data)


async def test_the_reference_ends_where_plain_pocketflow_ends() -> None:
    """The recorder does not change what pocketflow does: its last state is the final
    store of an unrecorded run, and it has one state per step plus the input."""
    for name, data in CASES:
        states = await _states(name, data)
        final, path = await asyncio.to_thread(run_pocketflow, name, data)
        assert states[-1] == final, name
        assert len(states) == len(path) + 1 or (not path and len(states) == 1), name


@pytest.mark.parametrize(("name", "data"), CASES, ids=CASE_IDS)
async def test_state_after_every_step_equals_plain_pocketflow(
    db: RunStore, name: str, data: dict[str, Any]
) -> None:
    expected = await _states(name, data)
    settings = settings_for(db, snapshot_every=3)
    run_id = await create_run(db, name, data)
    while True:
        outcome = await advance_once(db, run_id, settings, budget=0)
        run = await db.get(run_id)
        assert run is not None
        # the latest state of a run still going: from a snapshot when one is due
        assert await state_after(db, run, run["seq"], max_bytes=MAX_BYTES) == expected[run["seq"]]
        if outcome is Outcome.finished:
            break
        assert outcome is Outcome.yielded
    assert run["status"] == "succeeded", run["error"]
    assert run["seq"] == len(expected) - 1
    rebuilt = [await state_after(db, run, n, max_bytes=MAX_BYTES) for n in range(run["seq"] + 1)]
    assert rebuilt == expected


async def test_a_snapshot_newer_than_the_step_asked_for_is_not_used(db: RunStore) -> None:
    """After step 4 of a run snapshotted at step 3, step 2's state comes from the input."""
    settings = settings_for(db, snapshot_every=3)
    run_id = await create_run(db, "long", {"steps": 8, "delay": 0})
    for _ in range(4):
        assert await advance_once(db, run_id, settings, budget=0) is Outcome.yielded
    run = await db.get(run_id)
    assert run is not None and run["seq"] == 4
    assert await db.snapshot(run_id) is not None
    state, state_seq = await db.snapshot(run_id)
    assert state_seq == 3 and state["progress"] == [1, 2, 3]
    after_2 = await state_after(db, run, 2, max_bytes=MAX_BYTES)
    assert after_2["progress"] == [1, 2] and after_2["done"] == 2
    after_4 = await state_after(db, run, 4, max_bytes=MAX_BYTES)
    assert after_4["progress"] == [1, 2, 3, 4]
    assert await state_after(db, run, 0, max_bytes=MAX_BYTES) == run["input"]
