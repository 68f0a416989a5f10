"""Durable control on the embedded shape: a real ``pocketrun serve`` (local executor) on
SQLite and on PostgreSQL, killed with SIGKILL where a test says so.

Human input (AskHuman), retry, replay, pause and unpause, durable sleep, and who may do
each. Nodes count their calls in files (``tests.control_flows``), so "no step ran twice"
is checked across the processes a test kills.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pocketflow import Flow

from db.models import flow_slots, runs
from db.store import open_store
from tests.control_flows import build_approve, build_chain, counted
from tests.security_support import api_key, bearer, cli_key
from tests.support import Server, wait_for_run, wait_until

pytestmark = pytest.mark.timeout(300)

APPROVED = {"approved": True, "edit": "an edited note"}


@pytest.fixture
def counters(tmp_path: Path) -> Path:
    where = tmp_path / "counters"
    where.mkdir()
    return where


@pytest.fixture
def start(server_factory, counters: Path):
    """Start a server that serves the control flows and sweeps often."""

    def start_server(**env: str) -> Server:
        return server_factory(
            {
                "POCKETRUN_FLOWS": "tests.edge_flows,tests.control_flows",
                "POCKETRUN_TEST_COUNTERS": str(counters),
                "POCKETRUN_SWEEP_INTERVAL": "0.3",
                "POCKETRUN_LEASE_TTL": "3",
                **env,
            }
        )

    return start_server


def _start(client: httpx.Client, flow: str, data: dict[str, Any] | None = None) -> str:
    created = client.post(f"/v1/flows/{flow}/runs", json={"input": data or {}})
    assert created.status_code in (201, 202), created.text
    return created.json()["id"]


def _waiting(client: httpx.Client, run_id: str) -> dict[str, Any]:
    return wait_for_run(client, run_id, {"waiting", "failed", "succeeded"}, timeout=30)


def _pocketflow(flow: Flow, shared: dict[str, Any]) -> dict[str, Any]:
    flow.run(shared)
    return json.loads(json.dumps(shared))


def _approve_reference(data: dict[str, Any], answer: Any) -> dict[str, Any]:
    flow = build_approve()
    flow.start_node.successors["default"].ask = lambda request: answer
    return _pocketflow(flow, dict(data))


def _rows(db_url: str, query) -> list[Any]:
    async def main() -> list[Any]:
        store = open_store(db_url)
        try:
            async with store.sa.read() as conn:
                return list((await conn.execute(query)).all())
        finally:
            await store.close()

    return asyncio.run(main())


# --- human input -----------------------------------------------------------------------


def test_ask_human_survives_kill_9_and_equals_pocketflow(start, counters: Path) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "approve", {"topic": "leases"})
        run = _waiting(client, run_id)
        assert run["status"] == "waiting", run
        assert run["waiting_for"]["node"] == "Approve"
        assert run["waiting_for"]["request"]["schema"]["required"] == ["approved"]
        assert run["current_node"] == "Approve" and run["steps"] == 1
    server.kill()
    server = start()
    with server.client() as client:
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "waiting"
        resumed = client.post(f"/v1/runs/{run_id}/resume", json={"payload": APPROVED})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["waiting_for"] is None
        run = wait_for_run(client, run_id)
        assert run["status"] == "succeeded", run
        steps = client.get(f"/v1/runs/{run_id}/steps").json()["items"]
    assert counted(counters, "draft.prep") == 1
    assert counted(counters, "approve.prep") == 1
    assert counted(counters, "publish") == 1
    assert [s["node"] for s in steps] == ["Draft", "Approve", "Publish"]
    assert steps[1]["attempts"] == 0  # the answer took exec's place
    data = {"topic": "leases", "timeout": None}
    assert run["output"] == _approve_reference(data, APPROVED)
    assert run["output"]["draft"] == "an edited note" and run["output"]["asked"] == 1


def test_resume_checks_the_answer_and_the_run(start, db_url: str) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "approve")
        assert _waiting(client, run_id)["status"] == "waiting"
        bad = client.post(f"/v1/runs/{run_id}/resume", json={"payload": {"approved": "yes"}})
        assert bad.status_code == 422, bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")
        paths = [e["path"] for e in bad.json()["errors"]]
        assert paths == ["body.payload.approved"], bad.json()
        extra = client.post(
            f"/v1/runs/{run_id}/resume", json={"payload": {"approved": True, "why": 1}}
        )
        assert extra.status_code == 422, extra.text
        missing = client.post(f"/v1/runs/{run_id}/resume", json={})
        assert missing.status_code == 422
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "waiting"
        # another tenant's operator: 404, never 403
        other = cli_key(db_url, "operator", "elsewhere")
        foreign = httpx.post(
            f"{server.url}/v1/runs/{run_id}/resume",
            json={"payload": APPROVED},
            headers=bearer(other),
            timeout=30,
        )
        assert foreign.status_code == 404, foreign.text
        good = client.post(f"/v1/runs/{run_id}/resume", json={"payload": APPROVED})
        assert good.status_code == 200, good.text
        again = client.post(f"/v1/runs/{run_id}/resume", json={"payload": APPROVED})
        assert again.status_code == 409, again.text
        assert wait_for_run(client, run_id)["status"] == "succeeded"
        late = client.post(f"/v1/runs/{run_id}/resume", json={"payload": APPROVED})
        assert late.status_code == 409


def test_a_waiting_run_shows_on_the_event_stream_and_in_lists(start) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "approve")
        assert _waiting(client, run_id)["status"] == "waiting"
        listed = client.get("/v1/runs", params={"status": "waiting"}).json()["items"]
        assert [r["id"] for r in listed] == [run_id]
        assert client.get("/v1/runs", params={"status": "running"}).json()["items"] == []
        events: list[tuple[str, Any]] = []
        with client.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if kind == "run.waiting":
                        break
        kinds = [k for k, _ in events]
        assert kinds[-3:] == ["step.started", "run.status", "run.waiting"], kinds
        assert events[-3][1]["node"] == "Approve" and events[-3][1]["seq"] == 2
        assert events[-2][1]["status"] == "waiting"
        assert events[-1][1]["node"] == "Approve"
        assert events[-1][1]["request"]["prompt"].startswith("Approve: ")


def test_ask_human_inside_a_nested_flow(start, counters: Path) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "nested-approve", {"topic": "frames"})
        run = _waiting(client, run_id)
        assert run["status"] == "waiting", run
        assert run["waiting_for"]["node"].endswith("Approve")
    server.kill()
    server = start()
    with server.client() as client:
        answer = {"approved": True}
        assert client.post(f"/v1/runs/{run_id}/resume", json={"payload": answer}).status_code == 200
        run = wait_for_run(client, run_id)
    assert run["status"] == "succeeded", run
    assert counted(counters, "approve.prep") == 1
    assert counted(counters, "publish") == 2  # inside the inner flow, then in the outer
    assert run["output"]["outer"] == "entered"
    assert run["output"]["published"] == "a short note about frames"


def test_a_wait_past_its_timeout_ends_timed_out_and_retry_asks_again(start, counters) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "approve", {"timeout": 0.5})
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "timed_out", run
        assert run["error"]["type"] == "wait_timeout"
        retried = client.post(f"/v1/runs/{run_id}/retry")
        assert retried.status_code == 200, retried.text
        run = _waiting(client, run_id)
        assert run["status"] == "waiting" and run["retries"] == 1
        assert counted(counters, "approve.prep") == 1  # asked again without its prep
        client.post(f"/v1/runs/{run_id}/resume", json={"payload": {"approved": False}})
        run = wait_for_run(client, run_id)
    assert run["status"] == "succeeded" and run["output"]["published"] is None


def test_a_thousand_waiting_runs_hold_nothing_and_each_resumes(start, db_url: str) -> None:
    server = start()
    with server.client() as client:
        ids = [_start(client, "approve", {"topic": f"t{i}"}) for i in range(1000)]

        def all_waiting() -> bool:
            page = client.get("/v1/runs", params={"status": "waiting", "limit": 500})
            return len(page.json()["items"]) == 500 and _count_waiting(db_url) == 1000

        wait_until(all_waiting, 120, 0.5, "1,000 runs to wait")
        executor = client.get("/readyz").json()["checks"]["executor"]
        assert executor["in_flight"] == 0 and executor["queued"] == 0, executor
        leased = _rows(db_url, runs.select().where(runs.c.lease_owner.is_not(None)))
        assert leased == []
        assert _rows(db_url, flow_slots.select()) == []
        for run_id in ids:
            resumed = client.post(f"/v1/runs/{run_id}/resume", json={"payload": {"approved": True}})
            assert resumed.status_code == 200, resumed.text

        def all_done() -> bool:
            page = client.get("/v1/runs", params={"status": "succeeded", "limit": 500})
            return len(page.json()["items"]) == 500 and _count(db_url, "succeeded") == 1000

        wait_until(all_done, 180, 0.5, "1,000 runs to finish")


def _count(db_url: str, status: str) -> int:
    return len(_rows(db_url, runs.select().where(runs.c.status == status)))


def _count_waiting(db_url: str) -> int:
    return _count(db_url, "waiting")


# --- retry and replay ------------------------------------------------------------------


def test_retry_carries_on_from_the_failed_step_with_a_patch(start, counters: Path) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "fragile")
        run = wait_for_run(client, run_id)
        assert run["status"] == "failed" and run["error"]["node"] == "Fragile"
        assert counted(counters, "fragile.exec") == 2  # its max_retries, used up
        retried = client.post(f"/v1/runs/{run_id}/retry", json={"patch": {"ok": True}})
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == run_id and retried.json()["error"] is None
        run = wait_for_run(client, run_id)
        steps = client.get(f"/v1/runs/{run_id}/steps").json()["items"]
        again = client.post(f"/v1/runs/{run_id}/retry")
    assert run["status"] == "succeeded", run
    assert run["retries"] == 1
    assert counted(counters, "before") == 1  # the steps before it ran zero more times
    assert run["output"]["seen"] is True and run["output"]["before"] == 1
    assert [(s["node"], s["status"]) for s in steps] == [
        ("Before", "succeeded"),
        ("Fragile", "failed"),
        ("Fragile", "succeeded"),
    ]
    assert again.status_code == 409  # a run that succeeded has nothing to retry


def test_retry_a_cancelled_run_and_refuse_bad_patches(start) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "approve")
        assert _waiting(client, run_id)["status"] == "waiting"
        cancelled = client.post(f"/v1/runs/{run_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        bad = client.post(f"/v1/runs/{run_id}/retry", json={"patch": ["not", "an", "object"]})
        assert bad.status_code == 422
        nul = client.post(f"/v1/runs/{run_id}/retry", json={"patch": {"topic": "a\u0000b"}})
        assert nul.status_code == 422, nul.text
        retried = client.post(f"/v1/runs/{run_id}/retry", json={"patch": {"draft": "patched"}})
        assert retried.status_code == 200, retried.text
        assert _waiting(client, run_id)["status"] == "waiting"
        client.post(f"/v1/runs/{run_id}/resume", json={"payload": {"approved": True}})
        run = wait_for_run(client, run_id)
    assert run["status"] == "succeeded" and run["output"]["published"] == "patched"


def test_replay_from_a_step_equals_a_fresh_run_fed_the_state_before_it(start) -> None:
    server = start()
    with server.client() as client:
        parent_id = _start(client, "chain")
        parent = wait_for_run(client, parent_id)
        assert parent["status"] == "succeeded" and parent["output"]["total"] == 11111
        before = client.get(f"/v1/runs/{parent_id}/state", params={"seq": 2}).json()["state"]
        replayed = client.post(
            f"/v1/runs/{parent_id}/replay", json={"from_seq": 3, "patch": {"total": 5}}
        )
        assert replayed.status_code == 201, replayed.text
        child = replayed.json()
        assert replayed.headers["location"] == f"/v1/runs/{child['id']}"
        assert child["parent"] == {"run": parent_id, "seq": 3}
        assert child["trigger"] == {"type": "replay", "id": parent_id}
        child = wait_for_run(client, child["id"])
        steps = client.get(f"/v1/runs/{child['id']}/steps").json()["items"]
        listed = client.get("/v1/runs", params={"flow": "chain"}).json()["items"]
        too_far = client.post(f"/v1/runs/{parent_id}/replay", json={"from_seq": 6})
        zero = client.post(f"/v1/runs/{parent_id}/replay", json={"from_seq": 0})
    third = build_chain().start_node.successors["default"].successors["default"]
    expected = _pocketflow(Flow(start=third), {**before, "total": 5})
    assert child["status"] == "succeeded", child
    assert child["output"] == expected
    assert [s["node"] for s in steps] == ["Add#3", "Add#4", "Add#5"]
    assert {r["id"] for r in listed} == {parent_id, child["id"]}
    assert too_far.status_code == 422 and too_far.json()["errors"][0]["path"] == "body.from_seq"
    assert zero.status_code == 422


# --- pause, sleep, cancel --------------------------------------------------------------


def test_pause_kill_every_process_restart_unpause(start, counters: Path, db_url: str) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "plod")
        wait_until(
            lambda: client.get(f"/v1/runs/{run_id}").json()["steps"] >= 2, 30, 0.05, "2 steps"
        )
        paused = client.post(f"/v1/runs/{run_id}/pause")
        assert paused.status_code == 200, paused.text
        run = wait_for_run(client, run_id, {"paused", "succeeded"}, timeout=30)
        assert run["status"] == "paused", run
        at = run["steps"]
        assert 2 <= at < 8
    server.kill()
    assert _rows(db_url, runs.select().where(runs.c.lease_owner.is_not(None))) == []
    server = start()
    with server.client() as client:
        # a paused run keeps its place: the restarted server's sweeps leave it be
        wait_until(lambda: True, 1, 0.1, "")
        assert client.get(f"/v1/runs/{run_id}").json()["steps"] == at
        assert client.post(f"/v1/runs/{run_id}/unpause").status_code == 200
        run = wait_for_run(client, run_id)
        twice = client.post(f"/v1/runs/{run_id}/unpause")
    assert run["status"] == "succeeded", run
    assert run["output"]["done"] == list(range(8))
    assert [counted(counters, f"plod.{i}") for i in range(8)] == [1] * 8
    assert twice.status_code == 409


def test_pause_a_queued_run_at_once(start) -> None:
    server = start(POCKETRUN_CONCURRENCY="1")
    with server.client() as client:
        busy = _start(client, "plod")
        queued = _start(client, "chain")
        paused = client.post(f"/v1/runs/{queued}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["status"] in ("paused", "running")
        assert wait_for_run(client, queued, {"paused", "succeeded"})["status"] == "paused"
        assert wait_for_run(client, busy)["status"] == "succeeded"
        assert client.get(f"/v1/runs/{queued}").json()["status"] == "paused"
        assert client.post(f"/v1/runs/{queued}/unpause").status_code == 200
        assert wait_for_run(client, queued)["status"] == "succeeded"
        waiting = _start(client, "approve")
        assert _waiting(client, waiting)["status"] == "waiting"
        assert client.post(f"/v1/runs/{waiting}/pause").status_code == 409


def test_a_durable_sleep_survives_a_restart(start, counters: Path) -> None:
    server = start()
    with server.client() as client:
        run_id = _start(client, "snooze", {"seconds": 3})
        run = wait_for_run(client, run_id, {"sleeping", "succeeded", "failed"}, timeout=30)
        assert run["status"] == "sleeping", run
        assert run["wake_at"] is not None and run["current_node"] == "Wake"
    server.kill()
    server = start()
    with server.client() as client:
        run = wait_for_run(client, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert run["output"]["woke_at"] - run["output"]["slept_at"] >= 3
    assert counted(counters, "snooze") == 1 and counted(counters, "wake") == 1


def test_cancel_is_immediate_on_waiting_paused_and_sleeping_runs(start) -> None:
    server = start()
    with server.client() as client:
        waiting = _start(client, "approve")
        sleeping = _start(client, "snooze", {"seconds": 600})
        paused = _start(client, "plod")
        client.post(f"/v1/runs/{paused}/pause")
        assert _waiting(client, waiting)["status"] == "waiting"
        assert wait_for_run(client, sleeping, {"sleeping"})["status"] == "sleeping"
        assert wait_for_run(client, paused, {"paused"})["status"] == "paused"
        for run_id in (waiting, sleeping, paused):
            cancelled = client.post(f"/v1/runs/{run_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            body = cancelled.json()
            assert body["status"] == "cancelled" and body["finished_at"] is not None
            assert body["wake_at"] is None


# --- who may -----------------------------------------------------------------------------


def test_consumers_resume_their_own_runs_only_and_every_control_call_is_audited(
    start,
) -> None:
    server = start()
    _, mine = api_key(server, "consumer")
    _, theirs = api_key(server, "consumer")
    _, operator = api_key(server, "operator")
    with httpx.Client(base_url=server.url, headers=bearer(mine), timeout=30) as me:
        run_id = _start(me, "approve")
        assert _waiting(me, run_id)["status"] == "waiting"
        for verb in ("retry", "pause", "unpause"):
            assert me.post(f"/v1/runs/{run_id}/{verb}").status_code == 403, verb
        assert me.post(f"/v1/runs/{run_id}/replay", json={"from_seq": 1}).status_code == 403
        other = httpx.post(
            f"{server.url}/v1/runs/{run_id}/resume",
            json={"payload": APPROVED},
            headers=bearer(theirs),
            timeout=30,
        )
        assert other.status_code == 404
        assert me.post(f"/v1/runs/{run_id}/resume", json={"payload": APPROVED}).status_code == 200
        assert wait_for_run(me, run_id)["status"] == "succeeded"
    with httpx.Client(base_url=server.url, headers=bearer(operator), timeout=30) as op:
        assert op.post(f"/v1/runs/{run_id}/replay", json={"from_seq": 2}).status_code == 201
        plod = _start(server.client(), "plod")
        assert op.post(f"/v1/runs/{plod}/pause").status_code == 200
        assert wait_for_run(op, plod, {"paused", "succeeded"})["status"] == "paused"
        assert op.post(f"/v1/runs/{plod}/unpause").status_code == 200
    with server.client() as admin:
        actions = {
            entry["action"]: entry
            for entry in admin.get("/v1/audit", params={"limit": 500}).json()["items"]
        }
    for action in ("run.resume", "run.replay", "run.pause", "run.unpause"):
        assert action in actions, sorted(actions)
    assert actions["run.resume"]["target"] == f"/v1/runs/{run_id}/resume" or run_id in str(
        actions["run.resume"]["target"]
    )
    assert actions["run.resume"]["role"] == "consumer"
