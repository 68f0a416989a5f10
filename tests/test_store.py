"""The run store, through its one interface, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from db.store import LeaseLost, NewRun, RunFilter, RunStore, StepRecord, open_store
from db.types import utcnow


def new_run(flow: str = "f", *, run_timeout: float | None = None, tenant: str = "t") -> NewRun:
    return NewRun(
        tenant=tenant,
        principal="p",
        flow=flow,
        flow_version="1",
        graph_hash="h" * 16,
        mode="background",
        queue="default",
        priority=0,
        input={"n": 1},
        metadata={"m": True},
        run_timeout=run_timeout,
        current_node="A",
    )


def step(seq: int, worker: str = "w") -> StepRecord:
    now = utcnow()
    return StepRecord(
        seq, "A", "succeeded", 1, None, now, now, worker, None, {"set": {"n": seq}, "del": []}
    )


async def created(db: RunStore, **kw) -> uuid.UUID:
    row, fresh = await db.create(new_run(**kw))
    assert fresh
    return row["id"]


async def test_create_returns_what_get_reads(db: RunStore) -> None:
    row, _ = await db.create(new_run())
    got = await db.get(row["id"])
    assert got is not None
    assert {k: got[k] for k in row if k != "deadline_at"} == {
        k: v for k, v in row.items() if k != "deadline_at"
    }
    assert (got["status"], got["input"], got["metadata"]) == ("queued", {"n": 1}, {"m": True})
    assert await db.version(row["id"]) == (0, "queued")
    assert await db.get(uuid.uuid4()) is None


async def test_deadline_is_set_by_the_database_clock(db: RunStore) -> None:
    row, _ = await db.create(new_run(run_timeout=60))
    before = await db.now()
    assert before - timedelta(seconds=5) < row["deadline_at"] - timedelta(seconds=60) <= before


async def test_database_clock_is_the_servers(db: RunStore) -> None:
    assert abs((await db.now()) - datetime.now(UTC)) < timedelta(seconds=5)


async def test_a_live_lease_keeps_others_out_until_it_expires(db: RunStore) -> None:
    run_id = await created(db)
    first = await db.claim(run_id, "a", 0.3)
    assert first is not None and first.status == "running" and first.deliveries == 1
    assert await db.claim(run_id, "b", 10) is None
    assert (await db.head(run_id)).leased_by == "a"
    await asyncio.sleep(0.4)
    assert (await db.head(run_id)).leased_by is None  # expired, by the database's clock
    second = await db.claim(run_id, "b", 10)
    assert second is not None and second.deliveries == 2


async def test_checkpoint_is_fenced_by_seq_and_owner(db: RunStore) -> None:
    run_id = await created(db)
    assert await db.claim(run_id, "a", 10) is not None
    assert await db.checkpoint(run_id, "a", 0, 10, step(1), {"current_node": "B"}) is None
    with pytest.raises(LeaseLost):  # a replay of the same seq
        await db.checkpoint(run_id, "a", 0, 10, step(1), {"current_node": "B"})
    with pytest.raises(LeaseLost):  # another owner
        await db.checkpoint(run_id, "b", 1, 10, step(2), {"current_node": "C"})
    got = await db.get(run_id)
    assert (got["seq"], got["current_node"]) == (1, "B")
    assert [s["seq"] for s in await db.steps(run_id)] == [1]
    assert await db.deltas(run_id, 0) == [{"set": {"n": 1}, "del": []}]


async def test_checkpoint_reports_a_pending_cancel(db: RunStore) -> None:
    run_id = await created(db)
    assert await db.claim(run_id, "a", 10) is not None
    row = await db.cancel(run_id)
    assert (row["status"], row["cancel_requested"]) == ("running", True)
    assert await db.checkpoint(run_id, "a", 0, None, step(1), {}) == "cancel"


async def test_cancel_of_a_queued_run_ends_it_at_once(db: RunStore) -> None:
    run_id = await created(db)
    row = await db.cancel(run_id)
    assert row["status"] == "cancelled" and row["finished_at"] is not None
    assert await db.claim(run_id, "a", 10) is None


async def test_concurrent_checkpoints_commit_each_and_fail_only_their_own(db: RunStore) -> None:
    ids = [await created(db) for _ in range(6)]
    for run_id in ids:
        assert await db.claim(run_id, "a", 10) is not None
    # one of them with a stale fence: only it fails, the others commit (group commit)
    seqs = [0, 0, 5, 0, 0, 0]
    results = await asyncio.gather(
        *(
            db.checkpoint(run_id, "a", seq, 10, step(seq + 1), {})
            for run_id, seq in zip(ids, seqs, strict=True)
        ),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["NoneType"] * 2 + ["LeaseLost"] + [
        "NoneType"
    ] * 3
    assert [(await db.get(i))["seq"] for i in ids] == [1, 1, 0, 1, 1, 1]


async def test_renew_extends_only_the_runs_named(db: RunStore) -> None:
    kept, dropped = await created(db), await created(db)
    for run_id in (kept, dropped):
        assert await db.claim(run_id, "a", 0.4) is not None
    assert await db.renew("a", 10, [kept]) == 1
    await asyncio.sleep(0.5)
    assert await db.claim(kept, "b", 10) is None
    assert await db.claim(dropped, "b", 10) is not None


async def test_take_orphans_expired_at_once_unleased_after_redispatch(db: RunStore) -> None:
    expired, unleased, live = await created(db), await created(db), await created(db)
    assert await db.claim(expired, "dead", 0.05) is not None
    assert await db.claim(live, "alive", 30) is not None
    await asyncio.sleep(0.1)
    found = {d.id for d in await db.take_orphans(60)}
    assert found == {expired}
    assert {d.id for d in await db.take_orphans(60)} == set()  # stamped: not sent twice
    assert {d.id for d in await db.take_orphans(60, everything=True)} == {expired, unleased}
    await asyncio.sleep(0.3)
    assert {d.id for d in await db.take_orphans(0.2)} == {expired, unleased}


async def test_slots_cap_a_flow_and_expire_unless_renewed(db: RunStore) -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await db.acquire_slot("f", a, "w1", 2, 0.4)
    assert await db.acquire_slot("f", b, "w1", 2, 0.4)
    assert not await db.acquire_slot("f", c, "w2", 2, 10)
    assert await db.renew_slots("w1", 10, [a]) == 1  # b's run is no longer in progress
    await asyncio.sleep(0.5)
    assert await db.acquire_slot("f", c, "w2", 2, 10)  # b's slot expired
    assert not await db.acquire_slot("f", uuid.uuid4(), "w2", 2, 10)
    await db.release_slot("f", a, "w1")
    assert await db.acquire_slot("f", uuid.uuid4(), "w2", 2, 10)


async def test_locks_have_one_live_holder(db: RunStore) -> None:
    assert await db.try_lock("sweeper", "a", 0.3)
    assert await db.try_lock("sweeper", "a", 0.3)  # renewal
    assert not await db.try_lock("sweeper", "b", 10)
    await asyncio.sleep(0.4)
    assert await db.try_lock("sweeper", "b", 10)
    await db.unlock("sweeper", "a")  # not a's any more: nothing happens
    assert not await db.try_lock("sweeper", "a", 10)
    await db.unlock("sweeper", "b")
    assert await db.try_lock("sweeper", "a", 10)


async def test_worker_registry_by_the_database_clock(db: RunStore) -> None:
    common = {"hostname": "h", "queues": ["default"], "running": []}
    await db.heartbeat("w1/1", name="w1", pid=1, ttl=10, **common)
    await db.heartbeat("w2/2", name="w2", pid=2, ttl=0.2, **common)
    await asyncio.sleep(0.3)
    assert await db.count_live_workers() == (1, 1)
    assert [w.name for w in await db.live_workers()] == ["w1"]
    everyone = {w.name: w.alive for w in await db.live_workers(include_dead=True)}
    assert everyone == {"w1": True, "w2": False}
    await db.forget_worker("w1/1")
    assert await db.count_live_workers() == (0, 0)


async def test_list_filters_and_pages_newest_first(db: RunStore) -> None:
    ids = [await created(db, tenant="t1") for _ in range(5)]
    await created(db, tenant="t2")
    page = await db.list(RunFilter(tenant="t1", limit=3))
    assert [r["id"] for r in page] == ids[::-1][:3]
    rest = await db.list(RunFilter(tenant="t1", limit=3, before_id=page[-1]["id"]))
    assert [r["id"] for r in rest] == ids[::-1][3:]
    assert len(await db.list(RunFilter(tenant=None))) == 6


async def test_open_store_refuses_an_in_memory_sqlite() -> None:
    with pytest.raises(ValueError, match="database file"):
        open_store("sqlite:///:memory:")


async def test_sqlite_writes_wait_off_the_loop_while_another_process_holds_the_lock(
    tmp_path,
) -> None:
    import sqlite3

    from db.migrate import upgrade

    path = tmp_path / "locked.db"
    store = open_store(f"sqlite:///{path}")
    try:
        await upgrade(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # as another process mid-write would
        creating = asyncio.ensure_future(store.create(new_run()))
        ticks = 0
        for _ in range(20):  # the loop keeps turning while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not creating.done()
        other.execute("COMMIT")
        other.close()
        row, fresh = await asyncio.wait_for(creating, 10)
        assert fresh and ticks == 20
        assert (await store.get(row["id"]))["status"] == "queued"
        # and the writer is back on the loop for the next write
        assert (await store.create(new_run()))[1]
    finally:
        await store.close()
