"""pocketrun's final store and node path equal raw pocketflow's, on both databases.

Every (flow, input) pair of ``EXAMPLE_INPUTS`` and ``EDGE_FLOWS`` runs straight through
one engine, and handed to a brand-new engine at every checkpoint (as if another process
took the run over after each step: each step resumes from the cursor, with the store
rebuilt from the deltas, or from a snapshot every 3 steps plus the deltas after it).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from core.settings import Settings
from db.models import runs, steps
from db.store import NewRun, RunStore
from flows.registry import REGISTRY, Registry
from tests.edge_flows import EDGE_FLOWS, EXAMPLE_INPUTS, run_pocketflow
from workers.engine import Outcome, RunEngine

pytestmark = pytest.mark.filterwarnings("ignore:Flow ends")

CASES = [*EXAMPLE_INPUTS, *EDGE_FLOWS]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]

# ----------------------------------------------------------------------------------------
# helpers shared with the other engine test modules


async def create_run(
    db: RunStore,
    name: str,
    data: dict[str, Any],
    *,
    registry: Registry = REGISTRY,
    run_timeout: float | str | None = "spec",
    graph_hash: str | None = None,
) -> uuid.UUID:
    spec = registry.get(name)
    row, created = await db.create(
        NewRun(
            tenant="t1",
            principal="tester",
            flow=spec.name,
            flow_version=spec.version,
            graph_hash=graph_hash or spec.graph_hash,
            mode="background",
            queue=spec.queue,
            priority=0,
            input=spec.validate_input(data),
            metadata={},
            run_timeout=spec.run_timeout if run_timeout == "spec" else run_timeout,
        )
    )
    assert created
    return row["id"]


async def run_row(db: RunStore, run_id: uuid.UUID) -> dict[str, Any]:
    async with db.sa.read() as conn:
        row = (await conn.execute(select(runs).where(runs.c.id == run_id))).mappings().one()
    return dict(row)


async def step_rows(db: RunStore, run_id: uuid.UUID) -> list[dict[str, Any]]:
    async with db.sa.read() as conn:
        result = await conn.execute(
            select(steps).where(steps.c.run_id == run_id).order_by(steps.c.seq)
        )
        return [dict(r) for r in result.mappings()]


def settings_for(db: RunStore, **overrides: Any) -> Settings:
    return Settings(database_url=db.sa.url, **overrides)


def new_engine(db: RunStore, settings: Settings, registry: Registry = REGISTRY, **kw) -> RunEngine:
    return RunEngine(db, registry, settings, **kw)


async def advance_once(
    db: RunStore,
    run_id: uuid.UUID,
    settings: Settings,
    registry: Registry = REGISTRY,
    *,
    worker_name: str | None = None,
    **kw: Any,
) -> Outcome:
    """One ``advance`` by a brand-new engine (its own owner id and thread pool)."""
    engine = new_engine(db, settings, registry, worker_name=worker_name)
    try:
        return await engine.advance(run_id, **kw)
    finally:
        engine.threads.shutdown(wait=False)


async def reference(name: str, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    # run_pocketflow calls asyncio.run for async flows, so it needs a thread of its own;
    # it patches pocketflow while it runs, so nothing else runs pocketflow meanwhile.
    return await asyncio.to_thread(run_pocketflow, name, data)


# ----------------------------------------------------------------------------------------


async def _check_equivalent(
    db: RunStore, name: str, data: dict[str, Any], run_id: uuid.UUID
) -> list[dict[str, Any]]:
    expected_store, expected_path = await reference(name, data)
    run = await run_row(db, run_id)
    assert run["status"] == "succeeded", run["error"]
    assert run["error"] is None
    assert run["lease_owner"] is None
    assert run["cursor"] is None
    assert run["state"] == expected_store
    spec = REGISTRY.get(name)
    keys = spec.output if spec.output is not None else list(expected_store)
    assert run["output"] == {k: expected_store[k] for k in keys if k in expected_store}
    rows = await step_rows(db, run_id)
    assert [r["node"] for r in rows] == expected_path
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert run["seq"] == len(rows)
    assert all(r["status"] == "succeeded" and r["error"] is None for r in rows)
    return rows


@pytest.mark.parametrize(("name", "data"), CASES, ids=CASE_IDS)
async def test_run_in_one_go_matches_pocketflow_store_and_path(
    db: RunStore, name: str, data: dict[str, Any]
) -> None:
    run_id = await create_run(db, name, data)
    assert await advance_once(db, run_id, settings_for(db)) is Outcome.finished
    await _check_equivalent(db, name, data, run_id)


async def _handed_over_at_every_checkpoint(
    db: RunStore, name: str, data: dict[str, Any], settings: Settings
) -> tuple[uuid.UUID, int]:
    run_id = await create_run(db, name, data)
    advances = 0
    while True:
        advances += 1
        outcome = await advance_once(db, run_id, settings, worker_name=f"w{advances}", budget=0)
        if outcome is Outcome.finished:
            return run_id, advances
        assert outcome is Outcome.yielded
        run = await run_row(db, run_id)
        assert run["status"] == "running"
        assert run["lease_owner"] is None  # released at the pause for the next taker
        assert run["seq"] == advances  # budget 0: exactly one step per hand-off
        assert advances < 500, "the run never ends"


@pytest.mark.parametrize(("name", "data"), CASES, ids=CASE_IDS)
async def test_run_handed_to_a_new_engine_at_every_checkpoint_matches_pocketflow(
    db: RunStore, name: str, data: dict[str, Any]
) -> None:
    """Each step resumes from the cursor in a fresh engine; its store is rebuilt from the
    deltas (default snapshot interval), then, in a second run, from a snapshot every 3 steps
    plus the deltas after it."""
    for snapshot_every in (50, 3):
        settings = settings_for(db, snapshot_every=snapshot_every)
        run_id, advances = await _handed_over_at_every_checkpoint(db, name, data, settings)
        rows = await _check_equivalent(db, name, data, run_id)
        assert advances == max(len(rows), 1)
        assert [r["worker"] for r in rows] == [f"w{i}" for i in range(1, len(rows) + 1)]


async def test_snapshot_is_written_every_n_steps_and_the_next_engine_rebuilds_from_it(
    db: RunStore,
) -> None:
    name, data = "long", {"steps": 8, "delay": 0}
    settings = settings_for(db, snapshot_every=3)
    run_id = await create_run(db, name, data)
    seen: list[tuple[int, int, Any]] = []
    while (outcome := await advance_once(db, run_id, settings, budget=0)) is Outcome.yielded:
        run = await run_row(db, run_id)
        seen.append((run["seq"], run["state_seq"], run["state"]))
        if run["seq"] == 4:
            # mark the snapshot taken at step 3: only a rebuild that starts from it (and
            # replays just the deltas after it) carries the mark into the final store
            async with db.sa.write() as conn:
                await conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(state={**run["state"], "marker": "from-snapshot"})
                )
    assert outcome is Outcome.finished
    for seq, state_seq, state in seen:
        assert state_seq == seq - seq % 3
        if state_seq:
            assert state["done"] == state_seq
            assert state["progress"] == list(range(1, state_seq + 1))
        else:
            assert state is None
    expected_store, expected_path = await reference(name, data)
    run = await run_row(db, run_id)
    assert run["state"] == {**expected_store, "marker": "from-snapshot"}
    assert [r["node"] for r in await step_rows(db, run_id)] == expected_path
