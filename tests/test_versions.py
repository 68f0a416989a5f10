"""Flow versions side by side on a real ``pocketrun serve`` (local executor), on SQLite and
on PostgreSQL: runs stay on their version across a kill -9, a server without it leaves
the run queued until FLOW_MISSING_GRACE, duplicate registrations fail at load, and an
operator moves a run to another version when its graph allows.

``evolving`` v1 is a -> b -> c -> d, v2 a -> b -> c -> check (a person) -> d
(``tests.versions_v1``, ``tests.versions_v2``); each node appends "<version>:<node>" to
the output's ``trail``; ``c`` holds its step until the test opens the gate file.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.errors import FlowDefinitionError
from db.models import runs
from db.store import open_store
from flows.compiler import compile_flow
from flows.migration import migration_problem
from flows.registry import REGISTRY, Registry, loaded_flows, register
from tests.security_support import api_key, bearer
from tests.support import BIN, ROOT, Server, wait_for_run, wait_until
from tests.test_equivalence import advance_once, create_run, run_row, settings_for
from tests.versions_nodes import build
from workers.engine import Outcome

pytestmark = pytest.mark.timeout(300)

V1 = "tests.versions_v1"
BOTH = "tests.versions_v1,tests.versions_v2"
V2 = "tests.versions_v2"


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


@pytest.fixture
def start(server_factory, gate: Path):
    def start_server(flows: str, **env: str) -> Server:
        return server_factory(
            {
                "POCKETRUN_FLOWS": flows,
                "POCKETRUN_TEST_GATE": str(gate),
                "POCKETRUN_SWEEP_INTERVAL": "0.2",
                "POCKETRUN_LEASE_TTL": "1",
                "POCKETRUN_REDISPATCH_AFTER": "0.5",
                **env,
            }
        )

    return start_server


def _create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    created = client.post("/v1/flows/evolving/runs", json={"input": {}, **body})
    assert created.status_code in (201, 202), created.text
    return created.json()


def _at_step_3(client: httpx.Client, version: str | None = "1") -> str:
    """A run of ``version`` whose steps 1 and 2 committed and whose step 3 (c) is running."""
    run = _create(client, **({"version": version} if version else {}))

    def at_c() -> bool:
        body = client.get(f"/v1/runs/{run['id']}").json()
        return body["status"] == "running" and body["current_node"] == "c"

    wait_until(at_c, 30, message="the run to reach step 3")
    return run["id"]


def _nodes(client: httpx.Client, run_id: str) -> list[str]:
    return [s["node"] for s in client.get(f"/v1/runs/{run_id}/steps").json()["items"]]


# --- rolling restarts -------------------------------------------------------------------


def test_a_restart_with_both_versions_finishes_the_run_on_its_own_and_starts_new_ones_on_2(
    start, gate: Path
) -> None:
    server = start(V1)
    with server.client() as client:
        run_id = _at_step_3(client)
    server.kill()
    server = start(BOTH)
    gate.touch()
    with server.client() as client:
        run = wait_for_run(client, run_id)
        assert run["status"] == "succeeded", run
        assert run["flow_version"] == "1"
        assert run["output"]["trail"] == ["1:a", "1:b", "1:c", "1:d"]  # v1's nodes throughout
        assert _nodes(client, run_id) == ["a", "b", "c", "d"]
        new = _create(client)
        assert new["flow_version"] == "2"
        asked = _create(client, version="1")
        assert asked["flow_version"] == "1"
        missing = client.post("/v1/flows/evolving/runs", json={"input": {}, "version": "7"})
        assert missing.status_code == 404
        assert "no version '7'" in missing.json()["detail"]
        assert "1, 2" in missing.json()["detail"]


def test_a_server_without_the_version_leaves_the_run_queued_then_fails_it_after_the_grace(
    start, gate: Path
) -> None:
    before_v1 = time.monotonic()  # v1 was last seen after this: when its server started
    server = start(V1)
    with server.client() as client:
        run_id = _at_step_3(client)
    server.kill()
    server = start(V2, POCKETRUN_FLOW_MISSING_GRACE="10")
    gate.touch()
    with server.client() as client:
        queued = wait_for_run(client, run_id, {"queued", "failed"}, timeout=30)
        assert queued["status"] == "queued", queued["error"]  # left for a process with v1
        run = wait_for_run(client, run_id, timeout=30)
    assert time.monotonic() - before_v1 >= 10
    assert run["status"] == "failed", run
    assert run["error"]["type"] == "flow_changed"
    assert "FLOW_MISSING_GRACE" in run["error"]["message"]


def test_within_the_grace_the_run_waits_queued_and_finishes_when_v1_comes_back(
    start, gate: Path
) -> None:
    server = start(V1)
    with server.client() as client:
        run_id = _at_step_3(client)
    server.kill()
    # Two deliveries at most: the many claims of the server without v1 must not count.
    server = start(V2, POCKETRUN_MAX_DELIVERIES="2")
    with server.client() as client:
        queued = wait_for_run(client, run_id, {"queued", "failed"}, timeout=30)
        assert queued["status"] == "queued", queued
        time.sleep(3)  # several sweeps offer it and the server leaves it each time
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "queued"
    server.kill()
    server = start(BOTH, POCKETRUN_MAX_DELIVERIES="2")
    gate.touch()
    with server.client() as client:
        run = wait_for_run(client, run_id)
        assert run["status"] == "succeeded", run
        assert run["output"]["trail"] == ["1:a", "1:b", "1:c", "1:d"]


# --- registration -----------------------------------------------------------------------


def test_one_version_registered_twice_with_different_graphs_fails_at_load_naming_both(
    db_url: str,
) -> None:
    env = {"POCKETRUN_DATABASE_URL": db_url, "POCKETRUN_FLOWS": f"{V1},tests.versions_dup"}
    done = subprocess.run(
        [str(BIN / "pocketrun"), "flows"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "registered twice with different graphs" in said
    assert "tests/versions_v1.py:" in said and "tests/versions_dup.py:" in said


def test_the_same_graph_twice_is_fine_and_a_builtin_name_is_refused() -> None:
    import flows.examples  # noqa: F401
    from flows import REGISTRY

    registry = Registry()

    def first():
        return build("1", check=False)

    def again():
        return build("1", check=False)

    spec = register("evolving", first, registry=registry)
    assert register("evolving", again, registry=registry) is spec  # same graph: one spec
    with pytest.raises(FlowDefinitionError, match="registered twice") as refused:
        register("evolving", lambda: build("1", check=True), registry=registry)
    assert "test_versions.py:" in refused.value.detail
    hello = REGISTRY.get("hello")
    register("hello", hello.build, input=hello.input, mode=hello.mode, registry=registry)
    with pytest.raises(FlowDefinitionError, match="built-in example"):
        register("hello", first, version="9", registry=registry)


# --- moving a run to another version ----------------------------------------------------


def test_an_operator_moves_a_paused_run_to_version_2_and_it_finishes_there(
    start, gate: Path
) -> None:
    server = start(BOTH)
    _, operator = api_key(server, "operator")
    _, consumer = api_key(server, "consumer")
    with server.client() as client:
        listed = [(f["name"], f["version"]) for f in client.get("/v1/flows").json()["items"]]
        assert ("evolving", "1") in listed and ("evolving", "2") in listed
        detail = client.get("/v1/flows/evolving").json()
        assert detail["version"] == "2"
        assert [v["version"] for v in detail["versions"]] == ["1", "2"]
        v2_hash = detail["versions"][1]["graph_hash"]
        run_id = _at_step_3(client)
        assert client.post(f"/v1/runs/{run_id}/pause").status_code == 200
        gate.touch()  # c commits, then the run pauses before d
        paused = wait_for_run(client, run_id, {"paused", "succeeded"})
        assert paused["status"] == "paused", paused
    with httpx.Client(base_url=server.url, headers=bearer(consumer), timeout=30) as them:
        assert them.post(f"/v1/runs/{run_id}/migrate", json={"version": "2"}).status_code == 403
    with httpx.Client(base_url=server.url, headers=bearer(operator), timeout=30) as op:
        unknown = op.post(f"/v1/runs/{run_id}/migrate", json={"version": "7"})
        assert unknown.status_code == 422, unknown.text
        moved = op.post(f"/v1/runs/{run_id}/migrate", json={"version": "2"})
        assert moved.status_code == 200, moved.text
        assert moved.json()["flow_version"] == "2"
        assert op.post(f"/v1/runs/{run_id}/unpause").status_code == 200
        run = wait_for_run(op, run_id)
    assert run["status"] == "succeeded", run
    assert run["output"]["trail"] == ["1:a", "1:b", "1:c", "2:d"]  # d ran version 2's node
    with server.client() as admin:
        entries = admin.get("/v1/audit", params={"limit": 500}).json()["items"]
        migrated = [e for e in entries if e["action"] == "run.migrate"]
        assert migrated and migrated[0]["role"] == "operator"
        hashes = _graph_hashes(server.database_url, run_id)
    assert hashes == v2_hash


def test_moving_a_run_whose_node_the_target_lacks_is_409_naming_the_node(start, gate: Path) -> None:
    server = start(BOTH)
    gate.touch()
    with server.client() as client:
        run = _create(client)  # version 2: waits at check, which version 1 has not
        waiting = wait_for_run(client, run["id"], {"waiting", "failed", "succeeded"})
        assert waiting["status"] == "waiting" and waiting["current_node"] == "check", waiting
        refused = client.post(f"/v1/runs/{run['id']}/migrate", json={"version": "1"})
        assert refused.status_code == 409, refused.text
        assert "node 'check' does not exist" in refused.json()["detail"]
        still = client.get(f"/v1/runs/{run['id']}").json()
        assert still["flow_version"] == "2" and still["status"] == "waiting"


def test_the_static_check_names_a_missing_edge_and_allows_what_still_exists() -> None:
    v1, v2 = compile_flow(build("1", check=False)), compile_flow(build("2", check=True))
    assert migration_problem(v1, v2, [], "d") is None
    assert migration_problem(v1, v2, [], None) is None  # not started: anything goes
    assert migration_problem(v1, v2, [], "c") == (
        "edge 'c' -> 'd' (action 'default') does not exist in the target version"
    )
    assert "enclosing flow 'inner'" in (migration_problem(v1, v2, ["inner"], "a") or "")


def _graph_hashes(db_url: str, run_id: str) -> str:
    async def main() -> str:
        store = open_store(db_url)
        try:
            async with store.sa.read() as conn:
                query = runs.select().where(runs.c.id == uuid.UUID(run_id))
                return (await conn.execute(query)).mappings().one()["graph_hash"]
        finally:
            await store.close()

    return asyncio.run(main())


# --- the engine and the store, in process ---------------------------------------------


async def test_a_process_without_a_recently_seen_version_leaves_the_run_uncounted(db) -> None:
    run_id = await create_run(db, "hello", {"name": "x"})
    spec = REGISTRY.get("hello")
    await db.sync_flows(loaded_flows(REGISTRY))  # another process has it, now
    seen = await db.flow_last_seen("hello", spec.version, spec.graph_hash)
    assert seen is not None and abs((await db.now() - seen).total_seconds()) < 5
    assert await db.flow_last_seen("hello", spec.version, "f" * 16) is None
    settings = settings_for(db, max_deliveries=1)
    for _ in range(3):  # over the delivery cap, were these claims counted
        assert await advance_once(db, run_id, settings, Registry()) is Outcome.left
    row = await run_row(db, run_id)
    assert (row["status"], row["deliveries"], row["lease_owner"]) == ("queued", 0, None)
    assert await advance_once(db, run_id, settings) is Outcome.finished
    assert (await run_row(db, run_id))["status"] == "succeeded"
    gone = settings_for(db, flow_missing_grace=0)
    other = await create_run(db, "hello", {"name": "y"})
    assert await advance_once(db, other, gone, Registry()) is Outcome.finished
    row = await run_row(db, other)
    assert (row["status"], row["error"]["type"]) == ("failed", "flow_changed")
