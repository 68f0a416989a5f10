"""Run a flow in a test, through the real durable engine, in one line.

``run_flow("orders", {"id": 7})`` creates a run on a fresh SQLite file, migrates it, and
carries the run to its end with a ``RunEngine``, as ``pocketrun serve`` would;
``crash_after=k`` first runs the flow in a forked process that kills itself (SIGKILL)
right after step ``k`` commits, so nothing of that process survives but what the database
holds, and a fresh engine resumes the run from the checkpoint once the dead holder's lease
expires. The result is the run's record, its steps and its final shared store, as JSON.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from pocketflow import Flow

from core.events import STEP_FINISHED_EVENT, Event
from core.settings import Settings, get_settings
from db.migrate import upgrade
from db.store import STOPPED, TERMINAL, RunStore, open_store
from flows.registry import REGISTRY, FlowSpec, Registry, load_flows, register
from workers.engine import Outcome, RunEngine
from workers.new_runs import new_run

FlowRef = str | FlowSpec | Callable[[], Flow]

RUN_FIELDS = (
    "id",
    "flow",
    "flow_version",
    "status",
    "mode",
    "created_at",
    "started_at",
    "finished_at",
    "current_node",
    "input",
    "output",
    "error",
    "metadata",
)
STEP_FIELDS = (
    "seq",
    "node",
    "status",
    "attempts",
    "action",
    "started_at",
    "finished_at",
    "duration_ms",
    "worker",
    "error",
)
# the crashing process's lease: short, so the resume waits for its expiry only briefly
CRASH_LEASE_TTL = 0.2
RESUME_TIMEOUT = 30.0
_ENDED_BEFORE_CRASH = 3  # the forked process's exit code when the run ended before step k


class CrashNotReached(AssertionError):
    """``crash_after=k`` asked for a crash the run never got to."""


@dataclass(slots=True)
class FlowResult:
    run: dict[str, Any]  # the run's record, the fields of GET /v1/runs/{id}
    steps: list[dict[str, Any]]  # its steps in seq order, the fields of the steps list
    store: dict[str, Any]  # the shared store as the run left it
    crashed_after: int | None  # the step after which a process was killed, if one was

    @property
    def status(self) -> str:
        return self.run["status"]

    @property
    def output(self) -> Any:
        return self.run["output"]

    @property
    def path(self) -> list[str]:
        """The node ids of the steps, in order."""
        return [step["node"] for step in self.steps]


def run_flow(
    flow: FlowRef,
    input: Mapping[str, Any] | None = None,
    *,
    crash_after: int | None = None,
    version: str | None = None,
    database: str | Path | None = None,
    **settings: Any,
) -> FlowResult:
    """Run ``flow`` (a registered name, a ``FlowSpec`` or a factory) to its end or a stop.

    ``database``: the SQLite file to use (default: a temporary one, deleted after);
    ``settings``: ``Settings`` overrides (e.g. ``snapshot_every=3``). From async code,
    ``await arun_flow(...)`` instead."""
    return asyncio.run(
        arun_flow(
            flow, input, crash_after=crash_after, version=version, database=database, **settings
        )
    )


async def arun_flow(
    flow: FlowRef,
    input: Mapping[str, Any] | None = None,
    *,
    crash_after: int | None = None,
    version: str | None = None,
    database: str | Path | None = None,
    **settings: Any,
) -> FlowResult:
    """``run_flow`` for async tests."""
    if crash_after is not None and crash_after < 1:
        raise ValueError("crash_after must be a step number, 1 or more")
    registry, spec = _resolve(flow, version)
    if database is not None:
        return await _run(Path(database), registry, spec, input or {}, crash_after, settings)
    with tempfile.TemporaryDirectory(prefix="pocketrun-test-") as tmp:
        path = Path(tmp) / "runs.db"
        return await _run(path, registry, spec, input or {}, crash_after, settings)


def _resolve(flow: FlowRef, version: str | None) -> tuple[Registry, FlowSpec]:
    if isinstance(flow, str):
        if flow not in REGISTRY:  # not imported by the test: load what the server would
            load_flows(get_settings().flow_modules)  # examples too
        return REGISTRY, REGISTRY.get(flow, version)
    registry = Registry()
    if isinstance(flow, FlowSpec):
        return registry, registry.add(flow)
    if callable(flow):
        name = getattr(flow, "__name__", "flow").strip("_<>") or "flow"
        return registry, register(name, flow, registry=registry)
    raise TypeError(f"run_flow takes a flow name, a FlowSpec or a factory, not {flow!r}")


async def _run(
    path: Path,
    registry: Registry,
    spec: FlowSpec,
    data: Mapping[str, Any],
    crash_after: int | None,
    overrides: dict[str, Any],
) -> FlowResult:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", **overrides)
    store = open_store(settings.database_url)
    try:
        await upgrade(store)
        run_id = await _create(store, spec, data)
    finally:
        await store.close()  # nothing open across the fork
    if crash_after is not None:
        await _crash(settings, registry, run_id, crash_after)
    store = open_store(settings.database_url)
    try:
        await _advance_to_end(store, registry, settings, run_id)
        return await _result(store, run_id, crash_after)
    finally:
        await store.close()


async def _create(store: RunStore, spec: FlowSpec, data: Mapping[str, Any]) -> uuid.UUID:
    initial = spec.validate_input(dict(data))
    new = new_run(
        spec,
        initial,
        tenant="default",
        principal="test",
        trigger={"type": "api"},
        mode="background",
    )
    row, _ = await store.create(new)
    return row["id"]


async def _advance_to_end(
    store: RunStore, registry: Registry, settings: Settings, run_id: uuid.UUID
) -> None:
    """Advance until the run ends or stops (waiting, paused, sleeping); a dead process's
    lease is waited out."""
    engine = RunEngine(store, registry, settings, worker_name="test")
    loop = asyncio.get_running_loop()
    give_up = loop.time() + RESUME_TIMEOUT
    try:
        while True:
            outcome = await engine.advance(run_id)
            if outcome in (Outcome.finished, Outcome.stopped):
                return
            row = await store.get(run_id)
            assert row is not None
            if row["status"] in TERMINAL or row["status"] in STOPPED:
                return
            if loop.time() > give_up:
                raise TimeoutError(f"run {run_id} could not be claimed ({outcome})")
            if outcome is Outcome.skipped:  # a lease still held by a killed process
                await asyncio.sleep(CRASH_LEASE_TTL / 4)
    finally:
        engine.threads.shutdown(wait=False)


async def _crash(settings: Settings, registry: Registry, run_id: uuid.UUID, k: int) -> None:
    pid = os.fork()
    if pid == 0:
        _crash_child(settings, registry, run_id, k)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == _ENDED_BEFORE_CRASH:
        raise CrashNotReached(f"the run stopped before step {k}: nothing to crash after")
    if code != -signal.SIGKILL:
        raise RuntimeError(f"the crashing process exited with {code}, not a kill after step {k}")


def _crash_child(settings: Settings, registry: Registry, run_id: uuid.UUID, k: int) -> NoReturn:
    code = 1
    try:
        asyncio.run(_run_until_killed(settings, registry, run_id, k))
        code = _ENDED_BEFORE_CRASH
    except BaseException:  # reported, then this process ends
        traceback.print_exc()
    finally:
        os._exit(code)  # never back into the test runner's code


class _KillAfterStep:
    """An event sink that kills this process once step ``k``'s checkpoint is committed
    (the engine publishes ``step.finished`` after the commit)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def publish(self, run_id: uuid.UUID, event: Event) -> None:
        if event.type == STEP_FINISHED_EVENT and event.data["row"]["seq"] >= self.k:
            os.kill(os.getpid(), signal.SIGKILL)


async def _run_until_killed(
    settings: Settings, registry: Registry, run_id: uuid.UUID, k: int
) -> None:
    settings = settings.model_copy(update={"lease_ttl": CRASH_LEASE_TTL})
    store = open_store(settings.database_url)
    engine = RunEngine(store, registry, settings, worker_name="crashed", events=_KillAfterStep(k))
    await engine.advance(run_id)


async def _result(store: RunStore, run_id: uuid.UUID, crashed_after: int | None) -> FlowResult:
    row = await store.get(run_id)
    assert row is not None
    steps = await store.steps(run_id, delta=True)
    state, state_seq = await store.snapshot(run_id) or (None, 0)
    shared = dict(state) if state is not None else dict(row["input"])
    state_seq = state_seq if state is not None else 0
    for step in steps:  # the deltas after the last snapshot
        if step["seq"] > state_seq and step.get("delta"):
            _apply(shared, step["delta"])
    return FlowResult(
        run={key: _json(row.get(key)) for key in RUN_FIELDS},
        steps=[{key: _json(step.get(key)) for key in STEP_FIELDS} for step in steps],
        store=shared,
        crashed_after=crashed_after,
    )


def _apply(shared: dict[str, Any], delta: Mapping[str, Any]) -> None:
    shared.update(delta.get("set") or {})
    for key in delta.get("deleted") or ():
        shared.pop(key, None)


def _json(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
