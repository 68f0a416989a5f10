"""`pocketrun runs resume|retry|replay|pause|unpause` on the database of a real server.

The CLI changes the run in the database and, with the local executor, leaves it for the
server's next sweep (``POCKETRUN_SWEEP_INTERVAL``); with ``EXECUTOR=celery`` it hands
the run to the workers itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from typing import Any

import pytest

from tests import celery_support as cs
from tests.support import BIN, ROOT, Server, wait_for_run, wait_until
from tests.test_cli import run_id_from

FLOWS = "tests.edge_flows,tests.control_flows"
SERVER_ENV = {"POCKETRUN_FLOWS": FLOWS, "POCKETRUN_SWEEP_INTERVAL": "0.3"}
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker


def pocketrun(
    db_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "pocketrun"), *args],
        cwd=ROOT,
        env={
            **os.environ,
            "POCKETRUN_DATABASE_URL": db_url,
            "POCKETRUN_LOG_LEVEL": "WARNING",
            "POCKETRUN_FLOWS": FLOWS,
            "COLUMNS": "200",
            **(env or {}),
        },
        timeout=120,
        capture_output=True,
        text=True,
    )


def start(server: Server, flow: str, data: dict[str, Any] | None = None) -> str:
    with server.client() as client:
        response = client.post(f"/v1/flows/{flow}/runs", json={"input": data or {}})
        assert response.status_code in (201, 202), response.text
        return response.json()["id"]


def run_of(server: Server, run_id: str) -> dict[str, Any]:
    with server.client() as client:
        return client.get(f"/v1/runs/{run_id}").json()


def reach(server: Server, run_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    with server.client() as client:
        return wait_for_run(client, run_id, set(statuses), timeout=timeout)


def audited(server: Server, action: str) -> list[dict[str, Any]]:
    with server.client() as client:
        return client.get("/v1/audit", params={"action": action}).json()["items"]


@SQLITE_ONLY
def test_resume_refuses_a_payload_the_schema_rejects_then_delivers_a_good_one(
    server_factory, db_url: str
) -> None:
    server = server_factory(SERVER_ENV)
    run_id = start(server, "approve", {"topic": "cats"})
    reach(server, run_id, "waiting")

    shown = pocketrun(db_url, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "waiting_for Approve: Approve: a short note about cats" in shown.stdout
    assert run_id in pocketrun(db_url, "runs", "list", "--status", "waiting").stdout

    bad = pocketrun(db_url, "runs", "resume", run_id, '{"approved": "yes", "edit": 5}')
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert lines == [
        "the payload does not match the request's schema:",
        "  payload.approved: 'yes' is not of type 'boolean'",
        "  payload.edit: 5 is not of type 'string'",
    ]
    not_json = pocketrun(db_url, "runs", "resume", run_id, "{approved}")
    assert not_json.returncode == 2
    assert not_json.stderr.startswith("the payload is not JSON:")
    assert run_of(server, run_id)["status"] == "waiting"

    good = pocketrun(
        db_url, "runs", "resume", run_id, "--payload", '{"approved": true, "edit": "cats purr"}'
    )
    assert good.returncode == 0, good.stderr
    assert f"{run_id}: resumed, queued" in good.stdout
    done = reach(server, run_id, "succeeded", "failed")
    assert done["status"] == "succeeded"
    assert done["output"]["published"] == "cats purr"
    assert done["waiting_for"] is None

    again = pocketrun(db_url, "runs", "resume", run_id, '{"approved": true}')
    assert again.returncode == 1
    assert again.stderr.strip() == f"run '{run_id}' is succeeded, not waiting for input"
    [entry] = audited(server, "run.resume")
    assert (entry["principal"], entry["target"], entry["status"]) == ("cli", run_id, 200)


@SQLITE_ONLY
def test_retry_with_a_patch_carries_a_failed_run_on_to_success(server_factory, db_url) -> None:
    server = server_factory(SERVER_ENV)
    run_id = start(server, "fragile")
    failed = reach(server, run_id, "succeeded", "failed")
    assert failed["status"] == "failed"

    not_object = pocketrun(db_url, "runs", "retry", run_id, "--patch", "[true]")
    assert not_object.returncode == 2
    assert "--patch must be a JSON object" in not_object.stderr

    retried = pocketrun(db_url, "runs", "retry", run_id, "--patch", '{"ok": true}')
    assert retried.returncode == 0, retried.stderr
    assert f"{run_id}: retry 1, queued" in retried.stdout
    done = reach(server, run_id, "succeeded", "failed")
    assert done["status"] == "succeeded"
    assert (done["retries"], done["output"]["seen"]) == (1, True)
    assert "retries 1" in pocketrun(db_url, "runs", "show", run_id).stdout

    twice = pocketrun(db_url, "runs", "retry", run_id)
    assert twice.returncode == 1
    assert "only failed, timed-out or cancelled runs can be retried" in twice.stderr
    [entry] = audited(server, "run.retry")
    assert (entry["principal"], entry["target"]) == ("cli", run_id)


@SQLITE_ONLY
def test_replay_starts_a_new_run_from_a_step_with_its_parent(server_factory, db_url) -> None:
    server = server_factory(SERVER_ENV)
    parent = start(server, "chain")
    assert reach(server, parent, "succeeded", "failed")["output"]["total"] == 11111

    past_end = pocketrun(db_url, "runs", "replay", parent, "--from-seq", "9")
    assert past_end.returncode == 2
    assert "  --from-seq: must be a step of the run: 1 to 5" in past_end.stderr.splitlines()

    replayed = pocketrun(
        db_url, "runs", "replay", parent, "--from-seq", "2", "--patch", '{"total": 0}'
    )
    assert replayed.returncode == 0, replayed.stderr
    child = run_id_from(replayed.stdout)
    assert child != parent
    done = reach(server, child, "succeeded", "failed")
    assert done["status"] == "succeeded"
    assert done["parent"] == {"run": parent, "seq": 2}
    assert done["trigger"] == {"type": "replay", "id": parent}
    # the state before step 2 (trail [1]) with total set to 0, then steps 2 to 5
    assert done["output"]["total"] == 11110
    assert done["output"]["trail"] == [1, 10, 100, 1000, 10000]
    shown = pocketrun(db_url, "runs", "show", child).stdout
    assert f"parent {parent} step 2" in shown
    assert f"trigger replay {parent}" in shown
    [entry] = audited(server, "run.replay")
    assert (entry["principal"], entry["target"], entry["status"]) == ("cli", child, 201)
    assert entry["detail"]["parent"] == parent


@SQLITE_ONLY
def test_a_queued_run_paused_stays_paused_until_unpaused(server_factory, db_url) -> None:
    queued = pocketrun(db_url, "run", "plod")
    assert queued.returncode == 0, queued.stderr
    run_id = run_id_from(queued.stdout)
    paused = pocketrun(db_url, "runs", "pause", run_id)
    assert paused.returncode == 0, paused.stderr
    assert f"{run_id}: paused" in paused.stdout

    server = server_factory(SERVER_ENV)  # its sweeps leave a paused run alone
    time.sleep(1.5)
    row = run_of(server, run_id)
    assert (row["status"], row["steps"]) == ("paused", 0)
    assert "paused" in pocketrun(db_url, "runs", "list", "--status", "paused").stdout

    unpaused = pocketrun(db_url, "runs", "unpause", run_id)
    assert unpaused.returncode == 0, unpaused.stderr
    done = reach(server, run_id, "succeeded", "failed")
    assert done["status"] == "succeeded"
    assert done["output"]["done"] == list(range(8))

    again = pocketrun(db_url, "runs", "unpause", run_id)
    assert again.returncode == 1
    assert again.stderr.strip() == f"run '{run_id}' is succeeded, not paused"
    actions = [e["action"] for e in audited(server, "run.pause") + audited(server, "run.unpause")]
    assert actions == ["run.pause", "run.unpause"]


@SQLITE_ONLY
def test_a_running_run_pauses_at_its_next_checkpoint(server_factory, db_url) -> None:
    server = server_factory(SERVER_ENV)
    run_id = start(server, "long", {"steps": 100, "delay": 0.1})
    wait_until(lambda: run_of(server, run_id)["steps"] >= 1, 30, 0.05, "a first step")

    paused = pocketrun(db_url, "runs", "pause", run_id)
    assert paused.returncode == 0, paused.stderr
    assert f"{run_id}: pause requested, running" in paused.stdout
    row = reach(server, run_id, "paused", "succeeded")
    assert row["status"] == "paused"
    time.sleep(1)
    assert run_of(server, run_id)["steps"] == row["steps"] < 100

    assert pocketrun(db_url, "runs", "unpause", run_id).returncode == 0
    done = reach(server, run_id, "succeeded", "failed")
    assert (done["status"], done["output"]["done"]) == ("succeeded", 100)


@SQLITE_ONLY
def test_control_verbs_refuse_unknown_and_unsuitable_runs(server_factory, db_url) -> None:
    server = server_factory(SERVER_ENV)
    run_id = start(server, "approve")
    reach(server, run_id, "waiting")
    unknown = "01a234f9-0000-7000-8000-000000000000"
    for args in (
        ("resume", unknown, "{}"),
        ("retry", unknown),
        ("replay", unknown, "--from-seq", "1"),
        ("pause", unknown),
        ("unpause", unknown),
    ):
        result = pocketrun(db_url, "runs", *args)
        assert (result.returncode, result.stderr.strip()) == (1, "run not found"), args
    for args, message in (
        (("retry", run_id), "is waiting; only failed, timed-out or cancelled runs"),
        (("replay", run_id, "--from-seq", "1"), "is waiting; replay a finished run"),
        (("pause", run_id), "is waiting; only queued or running runs pause"),
        (("unpause", run_id), "is waiting, not paused"),
    ):
        result = pocketrun(db_url, "runs", *args)
        assert result.returncode == 1, args
        assert message in result.stderr, result.stderr
    both = pocketrun(db_url, "runs", "resume", run_id, "{}", "--payload", "{}")
    assert both.returncode == 2
    assert pocketrun(db_url, "runs", "list", "--status", "asleep").returncode == 2
    assert run_of(server, run_id)["status"] == "waiting"
    assert audited(server, "run.retry") == []


def test_with_celery_the_cli_hands_a_retried_run_to_the_workers(
    pg: str, redis_server: cs.RedisServer, start_worker
) -> None:
    # A long REDISPATCH_AFTER: only the CLI's own hand-off can bring the run back soon.
    slow_sweep = {"POCKETRUN_FLOWS": FLOWS, "POCKETRUN_REDISPATCH_AFTER": "600"}
    start_worker("control-1", env=slow_sweep).wait_ready()
    env = {**cs.worker_env(pg, redis_server.url), **slow_sweep}
    started = pocketrun(pg, "run", "fragile", env=env)
    assert started.returncode == 0, started.stderr
    run_id = uuid.UUID(run_id_from(started.stdout))
    assert cs.wait_terminal(pg, [run_id])[run_id]["status"] == "failed"

    retried = pocketrun(pg, "runs", "retry", str(run_id), "--patch", '{"ok": true}', env=env)
    assert retried.returncode == 0, retried.stderr
    assert "next sweep" not in retried.stdout
    row = cs.wait_terminal(pg, [run_id], timeout=60)[run_id]
    assert (row["status"], row["retries"]) == ("succeeded", 1)
    output = row["output"]
    assert (json.loads(output) if isinstance(output, str) else output)["seen"] is True
