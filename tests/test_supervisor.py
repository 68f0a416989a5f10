"""The supervisor stops its process when it can't keep leases; hung nodes don't use up
the step threads."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import textwrap
import uuid

from core.settings import Settings
from db.store import RunStore, open_store
from tests.support import BIN, ROOT, free_port
from tests.test_equivalence import REGISTRY, create_run, run_row, settings_for
from workers.engine import Outcome, RunEngine
from workers.supervisor import Supervisor
from workers.threads import StepThreads


def unreachable_store() -> RunStore:
    """A store whose PostgreSQL is not there: every statement fails to connect."""
    return open_store(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere")


async def test_a_supervisor_that_cannot_renew_past_the_ttl_gives_up() -> None:
    store = unreachable_store()
    settings = Settings(database_url=store.sa.url, lease_ttl=0.6, sweep_interval=0.1)
    failures: list[object] = []
    supervisor = Supervisor(
        store, settings, owner="o", active=lambda: [uuid.uuid4()], on_failure=failures.append
    )
    supervisor.start()
    try:
        for _ in range(60):
            if failures:
                break
            await asyncio.sleep(0.05)
    finally:
        await supervisor.stop()
        await store.close()
    assert failures and "not renewed" in str(failures[0])


async def test_a_supervisor_with_nothing_in_progress_does_not_give_up() -> None:
    store = unreachable_store()
    settings = Settings(database_url=store.sa.url, lease_ttl=0.3, sweep_interval=0.1)
    failures: list[object] = []
    supervisor = Supervisor(store, settings, owner="o", active=list, on_failure=failures.append)
    supervisor.start()
    await asyncio.sleep(0.8)
    await supervisor.stop()
    await store.close()
    assert failures == []


async def test_a_supervisor_that_dies_reports_it() -> None:
    store = unreachable_store()
    settings = Settings(database_url=store.sa.url, lease_ttl=0.3, sweep_interval=0.1)
    failures: list[object] = []
    calls = 0

    def active() -> list[uuid.UUID]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("bug")
        return []

    supervisor = Supervisor(store, settings, owner="o", active=active, on_failure=failures.append)
    supervisor.start()
    await asyncio.sleep(0.5)
    await supervisor.stop()
    await store.close()
    assert [type(f) for f in failures] == [RuntimeError]


def test_by_default_a_failed_supervisor_stops_its_process() -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, time, uuid
        from core.settings import Settings
        from db.store import open_store
        from workers.supervisor import Supervisor

        async def main():
            store = open_store("postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")
            settings = Settings(database_url=store.sa.url, lease_ttl=0.5, sweep_interval=0.1)
            Supervisor(store, settings, owner="o", active=lambda: [uuid.uuid4()]).start()
            await asyncio.sleep(20)
            print("still running")

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [str(BIN / "python"), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert "still running" not in proc.stdout


async def test_hung_nodes_do_not_use_up_the_step_threads(db: RunStore) -> None:
    settings = settings_for(db, concurrency=2)
    threads = StepThreads(2)
    engine = RunEngine(db, REGISTRY, settings, threads=threads)
    hung = [await create_run(db, "edge-slow", {"seconds": 30}) for _ in range(4)]
    for run_id in hung:  # each hangs past its 1 s step timeout and is abandoned
        assert await engine.advance(run_id) is Outcome.finished
        assert (await run_row(db, run_id))["status"] == "timed_out"
    assert threads.abandoned == 4
    quick = [await create_run(db, "hello", {"name": "x"}) for _ in range(5)]
    for run_id in quick:
        assert await asyncio.wait_for(engine.advance(run_id), 10) is Outcome.finished
        assert (await run_row(db, run_id))["status"] == "succeeded"
    threads.shutdown(wait=False)


async def test_a_step_timeout_counts_the_nodes_own_time_not_its_wait_for_a_thread(
    db: RunStore,
) -> None:
    """One thread, two runs of a 0.7 s node with a 1 s step timeout at once: the second
    waits 0.7 s for the thread, then runs its own 0.7 s, and still succeeds."""
    settings = settings_for(db, concurrency=2)
    threads = StepThreads(1)
    engine = RunEngine(db, REGISTRY, settings, threads=threads)
    runs = [await create_run(db, "edge-slow", {"seconds": 0.7}) for _ in range(2)]
    outcomes = await asyncio.gather(*(engine.advance(run_id) for run_id in runs))
    assert outcomes == [Outcome.finished, Outcome.finished]
    assert [(await run_row(db, r))["status"] for r in runs] == ["succeeded", "succeeded"]
    assert threads.abandoned == 0
    threads.shutdown(wait=False)
