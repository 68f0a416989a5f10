"""The run API over HTTP to a real ``pocketrun serve``, on SQLite and on PostgreSQL.

Create (``?wait=``, 201/202 + Location), read (fields, ETag/304, long-poll), steps, list
(order, filters, keyset pagination), cancel, priority, modes, metadata, Idempotency-Key,
and the health, metrics and documentation endpoints.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.support import Server, wait_for_run, wait_until

RUN_FIELDS = {
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
}
STEP_FIELDS = {
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
}
PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status
    return body


def start(client: httpx.Client, flow: str, body: dict[str, Any], **params: Any) -> httpx.Response:
    response = client.post(f"/v1/flows/{flow}/runs", json=body, params=params)
    assert response.status_code in (201, 202), response.text
    return response


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def list_all(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every page of ``GET /v1/runs``, following ``next_cursor``."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = client.get("/v1/runs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


# ----------------------------------------------------------------------------------------
# create, read, steps


def test_create_with_wait_returns_the_finished_run(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/flows/hello/runs?wait=10",
            json={"input": {"name": "ann"}, "metadata": {"ticket": "T-1"}},
        )
        assert response.status_code == 201, response.text
        run = response.json()
        assert response.headers["location"] == f"/v1/runs/{run['id']}"
        assert response.headers["etag"]
        assert run.keys() >= RUN_FIELDS
        assert run["flow"] == "hello"
        assert run["flow_version"] == "1"
        assert run["status"] == "succeeded"
        assert run["mode"] == "inline"
        assert run["input"] == {"name": "ann"}
        assert run["output"] == {"greeting": "HELLO, ANN!"}
        assert run["error"] is None
        assert run["current_node"] is None
        assert run["metadata"] == {"ticket": "T-1"}
        assert when(run["created_at"]) <= when(run["started_at"]) <= when(run["finished_at"])

        again = client.get(response.headers["location"])
        assert again.status_code == 200
        assert again.json() == run
        assert again.headers["etag"] == response.headers["etag"]


def test_long_flow_with_a_small_wait_is_accepted_and_goes_on(server: Server) -> None:
    with server.client() as client:
        began = time.monotonic()
        response = client.post(
            "/v1/flows/long/runs?wait=0.3", json={"input": {"steps": 4, "delay": 0.25}}
        )
        assert response.status_code == 202, response.text
        assert time.monotonic() - began < 5
        run = response.json()
        assert response.headers["location"] == f"/v1/runs/{run['id']}"
        assert run["status"] in ("queued", "running")
        assert run["finished_at"] is None and run["output"] is None

        done = wait_for_run(client, run["id"], timeout=30)
        assert done["status"] == "succeeded"
        assert done["output"] == {"done": 4, "percent": 100.0, "status": "finished"}

        steps = client.get(f"/v1/runs/{run['id']}/steps")
        assert steps.status_code == 200
        items = steps.json()["items"]
        assert [s["seq"] for s in items] == [1, 2, 3, 4, 5]
        assert [s["node"] for s in items] == ["Tick"] * 4 + ["finish"]
        assert [s["action"] for s in items][:4] == ["again", "again", "again", "finished"]
        for step in items:
            assert step.keys() >= STEP_FIELDS
            assert step["status"] == "succeeded"
            assert step["attempts"] == 1
            assert step["error"] is None
            assert step["worker"]
            assert when(step["started_at"]) <= when(step["finished_at"])
        assert all(s["duration_ms"] >= 200 for s in items[:4])
        starts = [when(s["started_at"]) for s in items]
        assert starts == sorted(starts)


def test_failed_run_shows_the_error_and_the_failed_step(server: Server) -> None:
    with server.client() as client:
        run = start(client, "edge-boom", {"input": {}}, wait=20).json()
        assert run["status"] == "failed"
        assert run["error"]["type"] and "boom" in run["error"]["message"]
        assert run["error"]["node"]
        steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
        assert steps[-1]["status"] == "failed"
        assert steps[-1]["attempts"] == 2  # Boom has max_retries=2
        assert "boom" in steps[-1]["error"]["message"]
        assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))


def test_etag_and_if_none_match(server: Server) -> None:
    with server.client() as client:
        created = start(client, "hello", {"input": {"name": "bo"}}, wait=10)
        run_id = created.json()["id"]
        first = client.get(f"/v1/runs/{run_id}")
        tag = first.headers["etag"]
        assert tag.startswith('"') and tag.endswith('"')

        cached = client.get(f"/v1/runs/{run_id}", headers={"If-None-Match": tag})
        assert cached.status_code == 304
        assert cached.content == b""
        assert cached.headers["etag"] == tag

        stale = client.get(f"/v1/runs/{run_id}", headers={"If-None-Match": '"stale-1"'})
        assert stale.status_code == 200
        assert stale.json()["id"] == run_id

        # RFC 9110: a list of tags, weak tags and * match too.
        for header in (f'"stale-1", {tag}', f"W/{tag}", "*"):
            matched = client.get(f"/v1/runs/{run_id}", headers={"If-None-Match": header})
            assert matched.status_code == 304, header


def test_long_poll_returns_early_on_change_and_304_when_nothing_changes(server: Server) -> None:
    with server.client() as client:
        run = start(client, "long", {"input": {"steps": 6, "delay": 0.4}}).json()
        run_id = run["id"]
        current = wait_for_run(client, run_id, {"running"}, timeout=20)
        tag = client.get(f"/v1/runs/{run_id}").headers["etag"]

        # A step commits every 0.4 s: the long poll comes back well before its 20 s.
        began = time.monotonic()
        changed = client.get(f"/v1/runs/{run_id}?wait=20", headers={"If-None-Match": tag})
        assert time.monotonic() - began < 5
        assert changed.status_code == 200, changed.text
        assert changed.headers["etag"] != tag
        assert changed.json()["steps"] > current["steps"] or changed.json()["status"] != "running"

        # Without If-None-Match, ?wait= waits for the end of the run.
        final = client.get(f"/v1/runs/{run_id}?wait=30")
        assert final.status_code == 200
        assert final.json()["status"] == "succeeded"

        # Nothing changes any more: the long poll runs out and answers 304.
        tag = final.headers["etag"]
        began = time.monotonic()
        same = client.get(f"/v1/runs/{run_id}?wait=1", headers={"If-None-Match": tag})
        elapsed = time.monotonic() - began
        assert same.status_code == 304
        assert same.headers["etag"] == tag
        assert 0.9 <= elapsed < 5


# ----------------------------------------------------------------------------------------
# list


def test_list_newest_first_filters_and_keyset_pagination(server: Server) -> None:
    with server.client() as client:
        hellos = [
            start(client, "hello", {"input": {"name": f"n{i}"}}, wait=10).json() for i in range(4)
        ]
        boom = start(client, "edge-boom", {"input": {}}, wait=20).json()
        assert boom["status"] == "failed"
        middle = (when(boom["created_at"]) + timedelta(milliseconds=20)).isoformat()
        time.sleep(0.1)
        slows = [
            start(client, "edge-slow", {"input": {"seconds": 0}}, wait=20).json() for _ in range(3)
        ]
        runs = [*hellos, boom, *slows]
        ids = [r["id"] for r in runs]
        for run in runs:
            wait_for_run(client, run["id"])

        everything = client.get("/v1/runs").json()
        assert everything["next_cursor"] is None
        assert [r["id"] for r in everything["items"]] == ids[::-1]
        created = [when(r["created_at"]) for r in everything["items"]]
        assert created == sorted(created, reverse=True)

        by_flow = client.get("/v1/runs", params={"flow": "hello"}).json()["items"]
        assert [r["id"] for r in by_flow] == [r["id"] for r in hellos][::-1]
        assert client.get("/v1/runs", params={"flow": "pipeline"}).json()["items"] == []

        failed = client.get("/v1/runs", params={"status": "failed"}).json()["items"]
        assert [r["id"] for r in failed] == [boom["id"]]
        both = client.get("/v1/runs", params=[("status", "failed"), ("status", "succeeded")])
        assert [r["id"] for r in both.json()["items"]] == ids[::-1]
        combined = client.get("/v1/runs", params=[("status", "failed"), ("flow", "hello")])
        assert combined.json()["items"] == []

        after = client.get("/v1/runs", params={"created_after": middle}).json()["items"]
        assert {r["id"] for r in after} == {r["id"] for r in slows}
        before = client.get("/v1/runs", params={"created_before": middle}).json()["items"]
        assert {r["id"] for r in before} == {r["id"] for r in [*hellos, boom]}
        naive = middle.replace("+00:00", "")
        assert client.get("/v1/runs", params={"created_after": naive}).json()["items"] == after
        window = client.get(
            "/v1/runs",
            params={"created_after": hellos[1]["created_at"], "created_before": middle},
        ).json()["items"]
        assert [r["id"] for r in window] == [
            boom["id"],
            hellos[3]["id"],
            hellos[2]["id"],
            hellos[1]["id"],
        ]

        first = client.get("/v1/runs", params={"limit": 3}).json()
        assert [r["id"] for r in first["items"]] == ids[::-1][:3]
        assert first["next_cursor"]

        for limit in (1, 2, 3, 7, 8, 500):
            walked = list_all(client, limit=limit)
            assert [r["id"] for r in walked] == ids[::-1], limit
        walked = list_all(client, limit=2, flow="hello")
        assert [r["id"] for r in walked] == [r["id"] for r in hellos][::-1]
        walked = list_all(
            client, limit=1, status="succeeded", created_after=hellos[2]["created_at"]
        )
        assert [r["id"] for r in walked] == [r["id"] for r in slows[::-1] + hellos[:1:-1]]


# ----------------------------------------------------------------------------------------
# cancel, priority


def test_cancel_queued_running_and_finished_runs(server_factory) -> None:
    server = server_factory(env={"POCKETRUN_CONCURRENCY": "1"})
    with server.client() as client:
        running = start(client, "long", {"input": {"steps": 200, "delay": 0.1}}).json()
        wait_for_run(client, running["id"], {"running"}, timeout=20)
        queued = start(client, "long", {"input": {"steps": 3, "delay": 0}}).json()
        assert client.get(f"/v1/runs/{queued['id']}").json()["status"] == "queued"

        # A queued run is cancelled at once, and never starts.
        cancelled = client.post(f"/v1/runs/{queued['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["status"] == "cancelled"
        assert body["finished_at"] is not None
        assert body["error"]["type"] == "cancelled"
        assert cancelled.headers["etag"] == client.get(f"/v1/runs/{queued['id']}").headers["etag"]

        # A running run is flagged, and stops at its next checkpoint.
        wait_until(
            lambda: client.get(f"/v1/runs/{running['id']}").json()["steps"] >= 2,
            20,
            message="two steps of the long run",
        )
        flagged = client.post(f"/v1/runs/{running['id']}/cancel")
        assert flagged.status_code == 200, flagged.text
        assert flagged.json()["status"] in ("running", "cancelled")
        assert flagged.json()["cancel_requested"] is True
        done = wait_for_run(client, running["id"], timeout=20)
        assert done["status"] == "cancelled"
        assert done["error"]["type"] == "cancelled"
        assert done["finished_at"] is not None
        steps = client.get(f"/v1/runs/{running['id']}/steps").json()["items"]
        assert 2 <= len(steps) < 200
        assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
        assert done["output"] is None or done["output"].get("status") != "finished"

        # The slot is free again; the cancelled queued run stayed cancelled and never ran.
        later = start(client, "long", {"input": {"steps": 1, "delay": 0}}, wait=20).json()
        assert later["status"] == "succeeded"
        never = client.get(f"/v1/runs/{queued['id']}").json()
        assert never["status"] == "cancelled"
        assert never["started_at"] is None
        assert client.get(f"/v1/runs/{queued['id']}/steps").json()["items"] == []

        # Cancelling again is harmless; a finished run can't be cancelled.
        assert client.post(f"/v1/runs/{queued['id']}/cancel").json()["status"] == "cancelled"
        conflict = client.post(f"/v1/runs/{later['id']}/cancel")
        problem = assert_problem(conflict, 409)
        assert "succeeded" in problem["detail"]
        assert client.get(f"/v1/runs/{later['id']}").json()["status"] == "succeeded"


def test_higher_priority_queued_later_starts_first(server_factory) -> None:
    server = server_factory(env={"POCKETRUN_CONCURRENCY": "1"})
    with server.client() as client:
        blocker = start(client, "long", {"input": {"steps": 4, "delay": 0.3}}).json()
        wait_for_run(client, blocker["id"], {"running"}, timeout=20)

        def queue(priority: int) -> str:
            body = {"input": {"steps": 1, "delay": 0}, "priority": priority}
            run = start(client, "long", body).json()
            assert run["priority"] == priority
            return run["id"]

        low = [queue(0), queue(0), queue(1)]
        high = queue(9)
        mid = queue(5)
        for run_id in [*low, high, mid]:
            assert client.get(f"/v1/runs/{run_id}").json()["status"] == "queued"

        finished = {
            r: wait_for_run(client, r, timeout=30) for r in [blocker["id"], *low, high, mid]
        }
        assert all(run["status"] == "succeeded" for run in finished.values())
        order = sorted([*low, high, mid], key=lambda r: when(finished[r]["started_at"]))
        assert order == [high, mid, low[2], low[0], low[1]]
        assert when(finished[high]["started_at"]) >= when(finished[blocker["id"]]["finished_at"])


# ----------------------------------------------------------------------------------------
# modes, metadata


def test_modes_inline_background_and_auto(server: Server) -> None:
    with server.client() as client:
        auto = start(client, "hello", {"input": {"name": "a"}}, wait=10).json()
        assert auto["mode"] == "inline" and auto["status"] == "succeeded"

        # An inline run answers when it's done, even without ?wait=.
        inline = client.post(
            "/v1/flows/hello/runs", json={"input": {"name": "b"}, "mode": "inline"}
        )
        assert inline.status_code == 201, inline.text
        assert inline.json()["mode"] == "inline"
        assert inline.json()["status"] == "succeeded"

        background = start(client, "hello", {"input": {"name": "c"}, "mode": "background"})
        assert background.json()["mode"] == "background"
        done = wait_for_run(client, background.json()["id"])
        assert done["status"] == "succeeded"
        assert done["output"] == {"greeting": "HELLO, C!"}

        waited = start(client, "hello", {"input": {"name": "d"}, "mode": "background"}, wait=10)
        assert waited.status_code == 201
        assert waited.json()["mode"] == "background" and waited.json()["status"] == "succeeded"

        slow_default = start(client, "edge-slow", {"input": {"seconds": 0}}, wait=10).json()
        assert slow_default["mode"] == "background"
        inline_slow = start(
            client, "edge-slow", {"input": {"seconds": 0}, "mode": "inline"}, wait=10
        ).json()
        assert inline_slow["mode"] == "inline" and inline_slow["status"] == "succeeded"

        for run in (auto, inline.json(), done, waited.json(), slow_default, inline_slow):
            steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
            assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
            assert len(steps) == 2


def test_metadata_round_trips(server: Server) -> None:
    metadata = {
        "customer": "Zoë 🚀",
        "nested": {"list": [1, 2.5, None, True, {"deep": "x"}], "empty": {}},
        "count": 2**62,
        "quote": 'he said "hi" \\ back',
    }
    with server.client() as client:
        created = start(client, "hello", {"input": {"name": "m"}, "metadata": metadata}, wait=10)
        assert created.json()["metadata"] == metadata
        run_id = created.json()["id"]
        assert client.get(f"/v1/runs/{run_id}").json()["metadata"] == metadata
        listed = client.get("/v1/runs").json()["items"]
        assert [r["metadata"] for r in listed if r["id"] == run_id] == [metadata]
        plain = start(client, "hello", {"input": {"name": "n"}}, wait=10).json()
        assert plain["metadata"] == {}


# ----------------------------------------------------------------------------------------
# Idempotency-Key


def test_idempotency_key_replays_the_same_run(server: Server) -> None:
    with server.client() as client:
        body = {"input": {"name": "idem"}, "metadata": {"n": 1}}
        key = {"Idempotency-Key": "order-42"}
        first = client.post("/v1/flows/hello/runs?wait=10", json=body, headers=key)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        second = client.post("/v1/flows/hello/runs?wait=10", json=body, headers=key)
        assert second.status_code == 201, second.text
        assert second.headers["idempotent-replayed"] == "true"
        assert second.json()["id"] == first.json()["id"]
        assert second.headers["location"] == first.headers["location"]

        # The same body spelled with its defaults is the same request.
        spelled = {**body, "mode": "auto", "priority": 0}
        third = client.post("/v1/flows/hello/runs", json=spelled, headers=key)
        assert third.json()["id"] == first.json()["id"]

        # The same key with another body is refused, and creates nothing.
        other = client.post("/v1/flows/hello/runs", json={"input": {"name": "other"}}, headers=key)
        problem = assert_problem(other, 422)
        assert any(e["path"].lower() == "header.idempotency-key" for e in problem["errors"])

        # The key belongs to the flow: another flow with the same key is another run.
        slow = client.post(
            "/v1/flows/edge-slow/runs?wait=10", json={"input": {"seconds": 0}}, headers=key
        )
        assert slow.status_code == 201, slow.text
        assert slow.json()["id"] != first.json()["id"]
        assert "idempotent-replayed" not in slow.headers

        # A different key is a different run.
        fresh = client.post("/v1/flows/hello/runs", json=body, headers={"Idempotency-Key": "43"})
        assert fresh.json()["id"] != first.json()["id"]

        ids = {r["id"] for r in client.get("/v1/runs").json()["items"]}
        assert ids == {first.json()["id"], slow.json()["id"], fresh.json()["id"]}


def test_every_submission_is_audited_once(server: Server) -> None:
    body = {"input": {"name": "bo"}, "mode": "background", "metadata": {"k": 1}}
    key = {"Idempotency-Key": "k1"}
    with server.client() as client:
        plain = client.post("/v1/flows/hello/runs", json=body)
        keyed = client.post("/v1/flows/hello/runs", json=body, headers=key)
        waited = client.post("/v1/flows/hello/runs?wait=10", json=body)
        assert [r.status_code for r in (plain, keyed, waited)] == [202, 202, 201]
        ids = [r.json()["id"] for r in (plain, keyed, waited)]
        for run_id in ids:
            assert wait_for_run(client, run_id)["status"] == "succeeded"
        replay = client.post("/v1/flows/hello/runs", json=body, headers=key)
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == ids[1]
        refused = client.post("/v1/flows/long/runs", json={"input": {"steps": -1}})
        assert refused.status_code == 422
        assert any("input" in e["path"] for e in refused.json()["errors"])

        entries = client.get("/v1/audit", params={"action": "run.start"}).json()["items"]
        found = {(e["target"], e["status"], bool(e["detail"].get("replayed"))) for e in entries}
        expected = {(ids[0], 202, False), (ids[1], 202, False), (ids[2], 201, False)}
        assert len(entries) == 4  # the 422 left none
        assert found == expected | {(ids[1], 201, True)}
        for entry in entries:
            assert entry["principal"].startswith("key:") and entry["request_id"]
            assert entry["detail"]["flow"] == "hello"


# ----------------------------------------------------------------------------------------
# health, metrics, docs


def test_health_readiness_metrics_and_docs(server: Server) -> None:
    with server.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.json()["checks"]["database"] == "ok"

        start(client, "hello", {"input": {}}, wait=10)
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE" in metrics.text and "# HELP" in metrics.text
        samples = [line for line in metrics.text.splitlines() if line and not line.startswith("#")]
        assert samples and all(len(line.rsplit(" ", 1)) == 2 for line in samples)
        assert 'flow="hello"' in metrics.text

        spec = client.get("/openapi.json")
        assert spec.status_code == 200
        paths = spec.json()["paths"]
        for path in (
            "/v1/flows",
            "/v1/flows/{flow}",
            "/v1/flows/{flow}/runs",
            "/v1/runs",
            "/v1/runs/{run_id}",
            "/v1/runs/{run_id}/steps",
            "/v1/runs/{run_id}/cancel",
        ):
            assert path in paths, path

        docs = client.get("/docs")
        assert docs.status_code == 200
        assert "text/html" in docs.headers["content-type"]
        assert "openapi.json" in docs.text
