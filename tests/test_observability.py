"""Spans and log lines, read from the stdout of real `pocketrun serve` and `pocketrun worker`
processes configured through the standard OTEL_* variables (the console exporter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import celery_support as cs
from tests.observability_flows import NODE_LOGGER, NODE_MESSAGE
from tests.observability_support import (
    LINE_KEYS,
    TRACING_ENV,
    log_lines,
    of_run,
    only,
    spans,
)
from tests.support import Server, wait_for_run, wait_until

pytestmark = pytest.mark.timeout(180)

pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker
FLOWS = "tests.edge_flows,tests.celery_support,tests.observability_flows"
START_ROUTE = "POST /v1/flows/{flow}/runs"


def _nodes(client: Any, run_id: str) -> list[str]:
    return [s["node"] for s in client.get(f"/v1/runs/{run_id}/steps").json()["items"]]


def _spans_of(paths: list[Path], run_id: str, count: int) -> list[dict[str, Any]]:
    """The run's spans once ``count`` of them have been exported."""
    return wait_until(
        lambda: len(found := of_run(spans(*paths), run_id)) >= count and found,
        20,
        0.1,
        f"{count} spans of run {run_id}",
    )


def _check_steps(found: list[dict[str, Any]], advance: dict[str, Any], nodes: list[str]) -> None:
    steps = sorted(
        (s for s in found if s["name"].startswith("step ")),
        key=lambda s: s["attributes"]["pocketrun.step.seq"],
    )
    assert [s["attributes"]["pocketrun.node"] for s in steps] == nodes
    assert [s["name"] for s in steps] == [f"step {n}" for n in nodes]
    for seq, step in enumerate(steps, 1):
        assert step["parent_id"] == advance["span_id"]
        assert step["trace_id"] == advance["trace_id"]
        attributes = step["attributes"]
        assert attributes["pocketrun.step.seq"] == seq
        assert attributes["pocketrun.flow"] == advance["attributes"]["pocketrun.flow"]
        assert attributes["pocketrun.flow.version"] == "1"
        assert attributes["pocketrun.step.attempts"] == 1


def test_embedded_run_and_step_spans_are_children_of_the_request(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = Server(
        f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}",
        env={**TRACING_ENV, "POCKETRUN_FLOWS": FLOWS},
        log_path=log,
    ).start()
    try:
        with server.client() as client:
            created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "n"}})
            ok = created.json()
            request_id = created.headers["x-request-id"]
            bad = client.post("/v1/flows/edge-boom/runs?wait=10", json={"input": {}}).json()
            assert (ok["status"], bad["status"]) == ("succeeded", "failed")
            ok_nodes, bad_nodes = _nodes(client, ok["id"]), _nodes(client, bad["id"])
        found = _spans_of([log], ok["id"], 1 + len(ok_nodes))
        failed = _spans_of([log], bad["id"], 1 + len(bad_nodes))
        requests = wait_until(
            lambda: len(r := [s for s in spans(log) if s["name"] == START_ROUTE]) == 2 and r,
            10,
            0.1,
            "both requests' spans",
        )
    finally:
        server.stop()

    request = only(
        [r for r in requests if r["attributes"].get("pocketrun.request.id") == request_id],
        "span of the first request",
    )
    assert request["kind"] == "SERVER"
    assert request["attributes"]["http.response.status_code"] == 201
    advance = only([s for s in found if s["name"] == "advance hello"], "advance span")
    assert advance["parent_id"] == request["span_id"]
    assert advance["trace_id"] == request["trace_id"]
    assert advance["attributes"]["pocketrun.run.status"] == "succeeded"
    assert advance["attributes"]["pocketrun.run.outcome"] == "finished"
    assert advance["status"] != "ERROR"
    _check_steps(found, advance, ok_nodes)

    # the failed step: its status, its error and the node's exception on the span
    boom = only([s for s in failed if s["name"] == f"step {bad_nodes[-1]}"], "failed step span")
    assert boom["status"] == "ERROR"
    assert boom["attributes"]["pocketrun.step.status"] == "failed"
    assert boom["attributes"]["pocketrun.error.type"] == "node_error"
    exception = only([e for e in boom["span_events"] if e["name"] == "exception"], "exception")
    assert exception["attributes"]["exception.type"] == "ValueError"
    assert exception["attributes"]["exception.message"] == "boom"
    assert "exception.stacktrace" in exception["attributes"]
    failed_advance = only([s for s in failed if s["name"] == "advance edge-boom"], "advance")
    assert failed_advance["status"] == "ERROR"
    assert failed_advance["attributes"]["pocketrun.run.status"] == "failed"
    assert boom["parent_id"] == failed_advance["span_id"]


def test_a_celery_run_continues_the_api_trace_and_every_line_is_json(
    pg: str, redis_server: cs.RedisServer, start_worker, tmp_path: Path
) -> None:
    env = {
        **TRACING_ENV,
        "POCKETRUN_FLOWS": FLOWS,
        "POCKETRUN_LOG_LEVEL": "INFO",
        "POCKETRUN_LOG_ACCESS": "true",
    }
    worker = start_worker("obs", env=env).wait_ready()
    server_log = tmp_path / "server.log"
    server = Server(
        pg, env={**cs.worker_env(pg, redis_server.url), **env}, log_path=server_log
    ).start()
    try:
        with server.client() as client:
            created = client.post(
                "/v1/flows/obs-chatty/runs", json={"input": {}, "mode": "background"}
            )
            assert created.status_code == 202, created.text
            run_id = created.json()["id"]
            request_id = created.headers["x-request-id"]
            assert wait_for_run(client, run_id)["status"] == "succeeded"
            nodes = _nodes(client, run_id)
        assert worker.log_path is not None
        found = _spans_of([server_log, worker.log_path], run_id, 2 + len(nodes))
    finally:
        server.stop()
        worker.stop()

    # the trace: the API's request -> its publish -> the worker's advance -> each step
    request = only(
        [s for s in spans(server_log) if s["name"] == START_ROUTE], "span of the request"
    )
    publish = only([s for s in found if s["kind"] == "PRODUCER"], "publish span")
    assert publish["parent_id"] == request["span_id"]
    assert publish["attributes"]["messaging.destination.name"] == "default"
    advance = only(
        [s for s in spans(worker.log_path) if s["name"] == "advance obs-chatty"],
        "the worker's advance span",
    )
    assert advance["attributes"]["pocketrun.run.id"] == run_id
    assert advance["parent_id"] == publish["span_id"]
    assert advance["trace_id"] == request["trace_id"] == publish["trace_id"]
    assert advance["attributes"]["pocketrun.run.status"] == "succeeded"
    _check_steps(found, advance, nodes)

    # the log: every line of both processes is one JSON object with the same core keys
    server_lines, worker_lines = log_lines(server_log), log_lines(worker.log_path)
    for line in server_lines + worker_lines:
        assert line.keys() >= LINE_KEYS, line
    # the node's own stdlib logging line, from its step thread, names the run and step
    said = [line for line in worker_lines if line["logger"] == NODE_LOGGER]
    assert [line["event"] for line in said] == [NODE_MESSAGE] * len(nodes)
    assert all(line["run_id"] == run_id and line["flow"] == "obs-chatty" for line in said)
    assert sorted(line["step"] for line in said) == list(range(1, len(nodes) + 1))
    # Celery's own lines come through too, its report of the task with the run id
    assert any(line["logger"].startswith("celery.worker") for line in worker_lines)
    reports = [line for line in worker_lines if line["logger"] == "celery.app.trace"]
    assert reports and all(line["run_id"] == run_id for line in reports)
    # uvicorn's access line for the request, with its request id and fields
    access = only(
        [
            line
            for line in server_lines
            if line["logger"] == "uvicorn.access"
            and line.get("path") == "/v1/flows/obs-chatty/runs"
        ],
        "access line of the request",
    )
    assert access["request_id"] == request_id
    assert (access["method"], access["status"]) == ("POST", 202)
