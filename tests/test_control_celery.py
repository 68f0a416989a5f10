"""Durable control (DESIGN.md section 10, "Human input" and "Operator control") with
EXECUTOR=celery, end to end: real PostgreSQL, a private Redis, real `pocketrun worker`
processes and a real `pocketrun serve`. Processes are killed with SIGKILL while runs wait,
pause or sleep; nothing may run twice and every run ends as plain pocketflow would."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pocketflow import Flow

from nodes.human import AskHuman
from tests import celery_support as cs
from tests.control_flows import (
    APPROVAL,
    build_approve,
    build_chain,
    build_nested_approve,
    counted,
)
from tests.security_support import api_key, bearer, cli_key
from tests.support import Server, wait_for_run, wait_until

pytestmark = pytest.mark.timeout(240)

# fixtures shared by the Celery tests
pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker

FLOWS = "tests.edge_flows,tests.celery_support,tests.control_flows"


@pytest.fixture
def counters(tmp_path: Path) -> Path:
    where = tmp_path / "counters"
    where.mkdir()
    return where


def _env(counters: Path) -> dict[str, str]:
    """What workers and the server share on top of ``cs.worker_env``."""
    return {"POCKETRUN_FLOWS": FLOWS, "POCKETRUN_TEST_COUNTERS": str(counters)}


class Cluster:
    """One `pocketrun serve` and the test's workers, each of which the test may kill -9."""

    def __init__(self, pg: str, redis_url: str, start_worker, counters: Path, tmp_path: Path):
        self.start_worker = start_worker
        self.env = _env(counters)
        self.server = Server(
            pg,
            env={**cs.worker_env(pg, redis_url), **self.env},
            log_path=tmp_path / "server.log",
        )
        self.workers: list[cs.Worker] = []
        self.generation = 0

    def start(self, workers: int = 1) -> Cluster:
        self.start_workers(workers, ready=False)  # they boot while the server does
        self.server.start()
        for worker in self.workers:
            worker.wait_ready()
        return self

    def start_workers(self, count: int = 1, *, ready: bool = True) -> None:
        # a fresh name each time: a killed worker's heartbeat row lives on for its TTL
        self.generation += 1
        self.workers = [
            self.start_worker(f"ctl-{self.generation}-{i}", env=self.env) for i in range(count)
        ]
        if ready:
            for worker in self.workers:
                worker.wait_ready()

    def names(self) -> set[str]:
        """The names of the workers started last."""
        return {worker.name for worker in self.workers}

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.server.kill()

    def restart_all(self, workers: int = 1) -> None:
        self.kill_all()
        self.start(workers)

    def client(self) -> httpx.Client:
        return self.server.client()

    def stop(self) -> None:
        self.server.kill()


@pytest.fixture
def cluster(pg: str, redis_server, start_worker, counters: Path, tmp_path: Path):
    made = Cluster(pg, redis_server.url, start_worker, counters, tmp_path)
    yield made
    made.stop()  # the start_worker fixture kills the workers


def _start(client: httpx.Client, flow: str, data: dict[str, Any] | None = None) -> dict:
    created = client.post(
        f"/v1/flows/{flow}/runs", json={"input": data or {}, "mode": "background"}
    )
    assert created.status_code in (201, 202), created.text
    return created.json()


def _lease(pg: str, run_id: str) -> tuple[Any, Any]:
    (row,) = cs.fetch(
        pg, "SELECT lease_owner, lease_expires_at FROM runs WHERE id = $1", uuid.UUID(run_id)
    )
    return row["lease_owner"], row["lease_expires_at"]


def _steps(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/runs/{run_id}/steps")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _answered(flow: Flow, payload: Any) -> Flow:
    """The AskHuman node of ``flow`` (at any depth) answers ``payload`` under pocketflow."""
    seen: set[int] = set()
    todo = [flow.start_node]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, AskHuman):
            node.ask = lambda request: payload
        if isinstance(node, Flow):
            todo.append(node.start_node)
        todo.extend(node.successors.values())
    return flow


def _plain(flow: Flow, shared: dict[str, Any]) -> dict[str, Any]:
    flow.run(shared)
    return _json_roundtrip(shared)


# ----------------------------------------------------------------------------------------
# human input


def test_ask_human_waits_holding_nothing_and_survives_a_kill(
    cluster: Cluster, pg: str, counters: Path
) -> None:
    cluster.start()
    with cluster.client() as client:
        run = _start(client, "approve", {"topic": "durable runs"})
        run_id = run["id"]
        run = wait_for_run(client, run_id, {"waiting"}, timeout=30)
        assert run["waiting_for"]["node"] == "Approve"
        request = run["waiting_for"]["request"]
        assert request["schema"] == APPROVAL
        assert request["prompt"] == "Approve: a short note about durable runs"
        assert run["wake_at"] is None  # no timeout asked for
        assert _lease(pg, run_id) == (None, None)
        # it holds no worker either: the one worker process (concurrency 1) runs another
        other_id = _start(client, "chain")["id"]
        assert wait_for_run(client, other_id, timeout=30)["status"] == "succeeded"
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "waiting"
        first = cluster.names()
    # kill -9 everything while it waits; nothing comes back on its own
    cluster.restart_all()
    with cluster.client() as client:
        run = client.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "waiting"
        assert _lease(pg, run_id) == (None, None)
        # another tenant doesn't see the run at all
        star = bearer(cli_key(pg, "admin", "*"))
        _, other = api_key(cluster.server, "operator", tenant="globex", as_=star)
        response = httpx.post(
            f"{cluster.server.url}/v1/runs/{run_id}/resume",
            json={"payload": {"approved": True}},
            headers=bearer(other),
            timeout=30,
        )
        assert response.status_code == 404, response.text
        # an answer that fails the schema: 422 naming the field, the run keeps waiting
        response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": {"approved": "yes"}})
        assert response.status_code == 422, response.text
        paths = [e.get("path") for e in response.json()["errors"]]
        assert "body.payload.approved" in paths, response.json()
        response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": {"edit": "x"}})
        assert response.status_code == 422, response.text
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "waiting"
        # the answer
        payload = {"approved": True, "edit": "edited"}
        response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": payload})
        assert response.status_code == 200, response.text
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        assert run["waiting_for"] is None
        # the prep of neither node ran again after the wait
        assert counted(counters, "draft.prep") == 1
        assert counted(counters, "approve.prep") == 1
        assert counted(counters, "publish") == 1
        expected = _plain(
            _answered(build_approve(), payload), {"topic": "durable runs", "timeout": None}
        )
        assert _json_roundtrip(run["output"]) == expected
        assert run["output"]["published"] == "edited" and run["output"]["asked"] == 1
        steps = _steps(client, run_id)
        assert [s["node"] for s in steps] == ["Draft", "Approve", "Publish"]
        assert {s["status"] for s in steps} == {"succeeded"}
        assert steps[0]["worker"] in first
        assert {s["worker"] for s in steps[1:]} <= cluster.names()  # after the restart
        # a run that is not waiting
        response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": payload})
        assert response.status_code == 409, response.text
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
    assert counted(counters, "publish") == 1


def test_nested_ask_human_on_workers(cluster: Cluster, pg: str, counters: Path) -> None:
    cluster.start()
    with cluster.client() as client:
        run_id = _start(client, "nested-approve", {"topic": "nesting"})["id"]
        run = wait_for_run(client, run_id, {"waiting"}, timeout=30)
        assert run["waiting_for"]["node"].endswith("Approve"), run["waiting_for"]
        assert run["waiting_for"]["request"]["schema"] == APPROVAL
        assert _lease(pg, run_id) == (None, None)
        payload = {"approved": True}
        response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": payload})
        assert response.status_code == 200, response.text
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        expected = _plain(
            _answered(build_nested_approve(), payload), {"topic": "nesting", "timeout": None}
        )
        assert _json_roundtrip(run["output"]) == expected
        assert run["output"]["outer"] == "entered"
    assert counted(counters, "approve.prep") == 1
    assert counted(counters, "draft.prep") == 1
    assert counted(counters, "publish") == 2  # the inner flow's Publish, then the outer's


# ----------------------------------------------------------------------------------------
# operator control


def test_retry_carries_a_failed_run_on_from_its_failed_step(
    cluster: Cluster, counters: Path
) -> None:
    cluster.start()
    with cluster.client() as client:
        run_id = _start(client, "fragile")["id"]
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "failed", run
        assert run["error"]["node"] == "Fragile"
        assert run["retries"] == 0
        assert counted(counters, "fragile.exec") == 2  # max_retries=2
        response = client.post(f"/v1/runs/{run_id}/retry", json={"patch": {"ok": True}})
        assert response.status_code == 200, response.text
        assert response.json()["id"] == run_id
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        assert run["id"] == run_id and run["retries"] == 1
        assert run["error"] is None
        assert run["output"]["seen"] is True
        assert run["output"]["ok"] is True
        assert run["output"]["before"] == 1
        assert counted(counters, "before") == 1  # the steps before ran no more
        assert counted(counters, "fragile.exec") == 3
        steps = _steps(client, run_id)
        assert [(s["node"], s["status"]) for s in steps] == [
            ("Before", "succeeded"),
            ("Fragile", "failed"),
            ("Fragile", "succeeded"),
        ]
        assert [s["seq"] for s in steps] == [1, 2, 3]
        # a succeeded run isn't retried
        response = client.post(f"/v1/runs/{run_id}/retry", json={})
        assert response.status_code == 409, response.text


def test_replay_starts_a_new_run_from_a_step(cluster: Cluster) -> None:
    cluster.start()
    with cluster.client() as client:
        run_id = _start(client, "chain")["id"]
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        assert run["output"]["total"] == 11111
        before = client.get(f"/v1/runs/{run_id}/state", params={"seq": 2})
        assert before.status_code == 200, before.text
        assert before.json()["seq"] == 2
        state = before.json()["state"]
        assert state["trail"] == [1, 10]
        patch = {"total": 5}
        response = client.post(f"/v1/runs/{run_id}/replay", json={"from_seq": 3, "patch": patch})
        assert response.status_code == 201, response.text
        replay = response.json()
        assert replay["id"] != run_id
        assert response.headers["location"] == f"/v1/runs/{replay['id']}"
        assert replay["parent"] == {"run": run_id, "seq": 3}
        assert replay["trigger"]["type"] == "replay"
        assert replay["trigger"].get("id") == run_id
        done = wait_for_run(client, replay["id"], timeout=30)
        assert done["status"] == "succeeded", done["error"]
        assert done["parent"] == {"run": run_id, "seq": 3}
        third = build_chain().start_node.successors["default"].successors["default"]
        expected = _plain(Flow(start=third), {**state, **patch})
        assert _json_roundtrip(done["output"]) == expected
        assert done["output"]["total"] == 5 + 100 + 1000 + 10000
        steps = _steps(client, replay["id"])
        assert len(steps) == 3
        assert {s["status"] for s in steps} == {"succeeded"}
        # the source run is untouched
        assert client.get(f"/v1/runs/{run_id}").json()["output"]["total"] == 11111


def test_pause_holds_nothing_and_survives_killing_everything(
    cluster: Cluster, pg: str, counters: Path
) -> None:
    cluster.start(workers=2)
    with cluster.client() as client:
        run_id = _start(client, "plod")["id"]
        wait_until(lambda: len(_steps(client, run_id)) >= 2, 30, 0.05, "two steps of plod")
        response = client.post(f"/v1/runs/{run_id}/pause")
        assert response.status_code == 200, response.text
        run = wait_for_run(client, run_id, {"paused", *cs.TERMINAL}, timeout=30)
        assert run["status"] == "paused", run
        assert _lease(pg, run_id) == (None, None)
        done_at_pause = len(_steps(client, run_id))
        assert 2 <= done_at_pause < 8
        first = cluster.names()
    cluster.restart_all(workers=2)
    with cluster.client() as client:
        run = client.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "paused"  # nothing brought it back on its own
        assert len(_steps(client, run_id)) == done_at_pause
        response = client.post(f"/v1/runs/{run_id}/unpause")
        assert response.status_code == 200, response.text
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        assert run["output"]["done"] == list(range(8))
        steps = _steps(client, run_id)
        assert [s["seq"] for s in steps] == list(range(1, 9))
        assert {s["status"] for s in steps} == {"succeeded"}
        assert {s["worker"] for s in steps[:done_at_pause]} <= first
        assert {s["worker"] for s in steps[done_at_pause:]} <= cluster.names()
        # unpausing a run that is not paused
        assert client.post(f"/v1/runs/{run_id}/unpause").status_code == 409
    assert {i: counted(counters, f"plod.{i}") for i in range(8)} == dict.fromkeys(range(8), 1)


def test_durable_sleep_survives_a_killed_worker(cluster: Cluster, pg: str, counters: Path) -> None:
    cluster.start()
    with cluster.client() as client:
        run_id = _start(client, "snooze", {"seconds": 3})["id"]
        run = wait_for_run(client, run_id, {"sleeping", *cs.TERMINAL}, timeout=30)
        assert run["status"] == "sleeping", run
        assert run["wake_at"] is not None
        assert _lease(pg, run_id) == (None, None)
        first = cluster.names()
        killed = time.monotonic()
        for worker in cluster.workers:
            worker.kill()
        cluster.start_workers(1)
        run = wait_for_run(client, run_id, timeout=15)
        assert run["status"] == "succeeded", run["error"]
        assert time.monotonic() - killed < 20
        output = run["output"]
        assert output["woke_at"] - output["slept_at"] >= 3
        steps = _steps(client, run_id)
        assert [s["node"] for s in steps] == ["Snooze", "Wake"]
        assert steps[0]["worker"] in first and steps[1]["worker"] in cluster.names()
    assert counted(counters, "snooze") == 1
    assert counted(counters, "wake") == 1


def test_durable_sleep_wakes_after_everything_was_down(
    cluster: Cluster, pg: str, counters: Path
) -> None:
    """Nothing is up when the sleep ends: the first worker back wakes the run (no server)."""
    cluster.start()
    with cluster.client() as client:
        run_id = _start(client, "snooze", {"seconds": 2})["id"]
        run = wait_for_run(client, run_id, {"sleeping", *cs.TERMINAL}, timeout=30)
        assert run["status"] == "sleeping", run
    cluster.kill_all()
    time.sleep(3)  # past wake_at, with no process up
    (row,) = cs.fetch(pg, "SELECT status FROM runs WHERE id = $1", uuid.UUID(run_id))
    assert row["status"] == "sleeping"
    cluster.start_workers(1)
    rows = cs.wait_terminal(pg, [uuid.UUID(run_id)], timeout=15)
    row = rows[uuid.UUID(run_id)]
    assert row["status"] == "succeeded", row["error"]
    state = json.loads(row["state"]) if isinstance(row["state"], str) else row["state"]
    assert state["woke_at"] - state["slept_at"] >= 2
    assert counted(counters, "snooze") == 1
    assert counted(counters, "wake") == 1


def test_a_wait_times_out_and_a_retry_waits_again(cluster: Cluster, counters: Path) -> None:
    """Past the request's timeout the run ends timed_out; a retry waits again, without
    running the node's prep again, and then takes an answer."""
    cluster.start()
    with cluster.client() as client:
        run_id = _start(client, "approve", {"topic": "late", "timeout": 2})["id"]
        run = wait_for_run(client, run_id, {"waiting", *cs.TERMINAL}, timeout=30)
        assert run["status"] == "waiting", run
        assert run["waiting_for"]["request"]["timeout"] == 2
        assert run["wake_at"] is not None
        run = wait_for_run(client, run_id, timeout=15)
        assert run["status"] == "timed_out", run
        assert run["error"]["type"] == "wait_timeout"
        payload = {"approved": False}
        response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": payload})
        assert response.status_code == 409, response.text
        # the retry waits anew (for as long again), and this time the answer comes in time
        response = client.post(f"/v1/runs/{run_id}/retry")
        assert response.status_code == 200, response.text
        run = wait_for_run(client, run_id, {"waiting", *cs.TERMINAL}, timeout=30)
        assert run["status"] == "waiting", run
        assert run["retries"] == 1
        response = client.post(f"/v1/runs/{run_id}/resume", json={"payload": payload})
        assert response.status_code == 200, response.text
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        expected = _plain(_answered(build_approve(), payload), {"topic": "late", "timeout": 2})
        assert _json_roundtrip(run["output"]) == expected
        assert run["output"]["published"] is None  # rejected
    assert counted(counters, "approve.prep") == 1
    assert counted(counters, "draft.prep") == 1


def test_replay_and_cancel_around_a_wait(cluster: Cluster, counters: Path) -> None:
    """A replay from the AskHuman step asks again (with the patched state); a waiting run
    can be cancelled and a retry of it waits again."""
    cluster.start()
    with cluster.client() as client:
        run_id = _start(client, "approve", {"topic": "replays"})["id"]
        wait_for_run(client, run_id, {"waiting"}, timeout=30)
        payload = {"approved": True}
        assert client.post(f"/v1/runs/{run_id}/resume", json={"payload": payload}).is_success
        assert wait_for_run(client, run_id, timeout=30)["status"] == "succeeded"
        # from the AskHuman step: it asks anew, about the patched draft
        response = client.post(
            f"/v1/runs/{run_id}/replay", json={"from_seq": 2, "patch": {"draft": "patched"}}
        )
        assert response.status_code == 201, response.text
        replay_id = response.json()["id"]
        run = wait_for_run(client, replay_id, {"waiting", *cs.TERMINAL}, timeout=30)
        assert run["status"] == "waiting", run
        assert run["waiting_for"]["request"]["prompt"] == "Approve: patched"
        assert counted(counters, "approve.prep") == 2
        # cancelled while it waits, then retried: it waits again without asking again
        response = client.post(f"/v1/runs/{replay_id}/cancel")
        assert response.status_code in (200, 202), response.text
        run = wait_for_run(client, replay_id, timeout=30)
        assert run["status"] == "cancelled", run
        response = client.post(f"/v1/runs/{replay_id}/retry")
        assert response.status_code == 200, response.text
        run = wait_for_run(client, replay_id, {"waiting", *cs.TERMINAL}, timeout=30)
        assert run["status"] == "waiting", run
        answer = {"approved": True, "edit": "final"}
        response = client.post(f"/v1/runs/{replay_id}/resume", json={"payload": answer})
        assert response.status_code == 200, response.text
        run = wait_for_run(client, replay_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        assert run["output"]["published"] == "final"
        # the state before step 2 had no "asked" yet: the replay's prep counted it once,
        # and the cancel and the retry neither lost that change nor applied it twice
        assert run["output"]["asked"] == 1
        assert run["parent"] == {"run": run_id, "seq": 2}
        # from the Publish step: no question at all
        response = client.post(f"/v1/runs/{run_id}/replay", json={"from_seq": 3})
        assert response.status_code == 201, response.text
        run = wait_for_run(client, response.json()["id"], timeout=30)
        assert run["status"] == "succeeded", run["error"]
        assert run["output"]["published"] == "a short note about replays"
        # a step the run doesn't have
        response = client.post(f"/v1/runs/{run_id}/replay", json={"from_seq": 4})
        assert response.status_code == 422, response.text
    assert counted(counters, "approve.prep") == 2
    assert counted(counters, "draft.prep") == 1


def test_a_queued_run_pauses_at_once(cluster: Cluster, counters: Path) -> None:
    """Paused before any worker took it: a worker that gets its message leaves it be."""
    cluster.server.start()  # no worker yet: the run stays queued
    with cluster.client() as client:
        run_id = _start(client, "plod")["id"]
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "queued"
        response = client.post(f"/v1/runs/{run_id}/pause")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "paused"
        cluster.start_workers(1)
        time.sleep(2)  # the worker has had the run's message by now
        run = client.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "paused" and run["started_at"] is None
        assert _steps(client, run_id) == []
        again = client.post(f"/v1/runs/{run_id}/pause")  # pausing a paused run: a no-op
        assert again.status_code == 200 and again.json()["status"] == "paused", again.text
        response = client.post(f"/v1/runs/{run_id}/unpause")
        assert response.status_code == 200, response.text
        run = wait_for_run(client, run_id, timeout=30)
        assert run["status"] == "succeeded", run["error"]
        assert run["output"]["done"] == list(range(8))
    assert {i: counted(counters, f"plod.{i}") for i in range(8)} == dict.fromkeys(range(8), 1)
