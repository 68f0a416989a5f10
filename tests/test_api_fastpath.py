"""The fast paths for polls and plain submissions answer exactly what their routes answer.

A query string or an Idempotency-Key sends the same request through the FastAPI route,
so each pair below is one answer from each path."""

from __future__ import annotations

from tests.support import Server, wait_for_run

VOLATILE = {"date", "x-request-id", "content-length"}


def _headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in VOLATILE}


def test_a_poll_answers_the_same_on_the_fast_path_and_the_route(server: Server) -> None:
    with server.client() as client:
        created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "ann"}})
        run_id = created.json()["id"]
        wait_for_run(client, run_id)
        fast = client.get(f"/v1/runs/{run_id}")
        routed = client.get(f"/v1/runs/{run_id}?wait=0")
        assert fast.status_code == routed.status_code == 200
        assert fast.content == routed.content
        assert _headers(fast) == _headers(routed)

        tag = fast.headers["etag"]
        fast_304 = client.get(f"/v1/runs/{run_id}", headers={"If-None-Match": tag})
        routed_304 = client.get(f"/v1/runs/{run_id}?wait=0", headers={"If-None-Match": tag})
        assert fast_304.status_code == routed_304.status_code == 304
        assert fast_304.headers["etag"] == routed_304.headers["etag"] == tag

        # what the fast path does not answer, the route still does
        assert client.get("/v1/runs/not-a-uuid").status_code == 404
        anonymous = client.get(f"/v1/runs/{run_id}", headers={"Authorization": "Bearer nope"})
        assert anonymous.status_code == 401


def test_a_plain_submission_answers_and_audits_the_same_on_both_paths(server: Server) -> None:
    body = {"input": {"name": "bo"}, "mode": "background", "metadata": {"k": 1}}
    with server.client() as client:
        fast = client.post("/v1/flows/hello/runs", json=body)
        routed = client.post("/v1/flows/hello/runs", json=body, headers={"Idempotency-Key": "k1"})
        assert fast.status_code == routed.status_code == 202
        a, b = fast.json(), routed.json()
        assert a["id"] != b["id"]
        for volatile in (
            "id",
            "created_at",
            "started_at",
            "finished_at",
            "status",
            "current_node",
            "steps",
            "output",
        ):
            a.pop(volatile), b.pop(volatile)
        assert a == b
        assert fast.headers["location"] == f"/v1/runs/{fast.json()['id']}"
        assert routed.headers["location"] == f"/v1/runs/{routed.json()['id']}"
        assert set(_headers(fast)) - {"idempotent-replayed"} == set(_headers(routed))
        for response in (fast, routed):
            assert wait_for_run(client, response.json()["id"])["status"] == "succeeded"
        audited = client.get("/v1/audit", params={"limit": 50}).json()["items"]
        targets = {entry["target"] for entry in audited if entry["action"] == "run.start"}
        assert {fast.json()["id"], routed.json()["id"]} <= targets

        # bad input never takes a shortcut: the route's 422 with field paths
        bad = client.post("/v1/flows/long/runs", json={"input": {"steps": -1}})
        assert bad.status_code == 422
        assert any("input" in e["path"] for e in bad.json()["errors"])
