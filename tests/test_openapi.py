"""What the served ``/openapi.json`` says: stable operation ids, every status an operation
can answer, problem+json for every error, the headers sent, and a few answers checked
against it. (``test_security_fuzz`` checks every answer against it at random.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server

PROBLEM = "application/problem+json"
SECURED = {"401", "413", "414", "422", "429", "503"}  # every operation that needs a credential
OPEN = {"413", "414", "422"}  # every other one: the body, query and text checks answer anything

# (method, path) -> (operationId, the statuses it may answer)
OPERATIONS: dict[tuple[str, str], tuple[str, set[str]]] = {
    ("post", "/v1/flows/{flow}/runs"): (
        "createRun",
        SECURED | {"201", "202", "400", "403", "404", "415", "422"},
    ),
    ("get", "/v1/runs/{run_id}"): ("getRun", SECURED | {"200", "304", "404", "422"}),
    ("get", "/v1/runs"): ("listRuns", SECURED | {"200", "422"}),
    ("get", "/v1/runs/{run_id}/steps"): ("listRunSteps", SECURED | {"200", "403", "404", "422"}),
    ("get", "/v1/runs/{run_id}/steps/{seq}"): ("getRunStep", SECURED | {"200", "404"}),
    ("get", "/v1/runs/{run_id}/state"): ("getRunState", SECURED | {"200", "403", "404", "422"}),
    ("post", "/v1/runs/{run_id}/cancel"): ("cancelRun", SECURED | {"200", "404", "409"}),
    ("post", "/v1/runs/{run_id}/resume"): ("resumeRun", SECURED | {"200", "404", "409", "422"}),
    ("post", "/v1/runs/{run_id}/retry"): (
        "retryRun",
        SECURED | {"200", "403", "404", "409", "422"},
    ),
    ("post", "/v1/runs/{run_id}/replay"): (
        "replayRun",
        SECURED | {"201", "403", "404", "409", "422"},
    ),
    ("post", "/v1/runs/{run_id}/pause"): ("pauseRun", SECURED | {"200", "403", "404", "409"}),
    ("post", "/v1/runs/{run_id}/unpause"): ("unpauseRun", SECURED | {"200", "403", "404", "409"}),
    ("post", "/v1/runs/{run_id}/migrate"): (
        "migrateRun",
        SECURED | {"200", "403", "404", "409", "422"},
    ),
    ("get", "/v1/runs/{run_id}/events"): ("streamRunEvents", SECURED | {"200", "404", "422"}),
    ("get", "/v1/flows"): ("listFlows", SECURED | {"200"}),
    ("get", "/v1/flows/{flow}"): ("getFlow", SECURED | {"200", "404", "422"}),
    ("post", "/v1/flows"): (
        "registerFlow",
        SECURED | {"200", "201", "403", "409", "415", "422"},
    ),
    ("get", "/v1/nodes"): ("listNodeTypes", SECURED | {"200"}),
    ("post", "/v1/keys"): ("createKey", SECURED | {"201", "400", "403", "415", "422"}),
    ("get", "/v1/keys"): ("listKeys", SECURED | {"200", "403", "422"}),
    ("delete", "/v1/keys/{key_id}"): ("revokeKey", SECURED | {"200", "403", "404", "422"}),
    ("get", "/v1/audit"): ("listAudit", SECURED | {"200", "403", "422"}),
    ("delete", "/v1/cache"): ("clearNodeCache", SECURED | {"200", "403", "404"}),
    ("get", "/v1/tenants/{tenant}/limits"): ("getTenantLimits", SECURED | {"200", "403", "404"}),
    ("put", "/v1/tenants/{tenant}/limits"): (
        "setTenantLimits",
        SECURED | {"200", "400", "403", "404", "415"},
    ),
    ("delete", "/v1/tenants/{tenant}/limits"): (
        "resetTenantLimits",
        SECURED | {"200", "403", "404"},
    ),
    # --- webhooks ---
    ("post", "/v1/webhooks"): ("createWebhook", SECURED | {"201", "400", "403", "415"}),
    ("get", "/v1/webhooks"): ("listWebhooks", SECURED | {"200", "403"}),
    ("get", "/v1/webhooks/{webhook_id}"): ("getWebhook", SECURED | {"200", "403", "404"}),
    ("patch", "/v1/webhooks/{webhook_id}"): (
        "updateWebhook",
        SECURED | {"200", "400", "403", "404", "415"},
    ),
    ("delete", "/v1/webhooks/{webhook_id}"): ("deleteWebhook", SECURED | {"204", "403", "404"}),
    ("get", "/v1/webhooks/{webhook_id}/deliveries"): (
        "listWebhookDeliveries",
        SECURED | {"200", "403", "404"},
    ),
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"): (
        "replayWebhookDelivery",
        SECURED | {"202", "403", "404"},
    ),
    # --- schedules ---
    ("post", "/v1/schedules"): ("createSchedule", SECURED | {"201", "400", "403", "409", "415"}),
    ("get", "/v1/schedules"): ("listSchedules", SECURED | {"200", "403"}),
    ("get", "/v1/schedules/{schedule_id}"): ("getSchedule", SECURED | {"200", "403", "404"}),
    ("patch", "/v1/schedules/{schedule_id}"): (
        "updateSchedule",
        SECURED | {"200", "400", "403", "404", "415"},
    ),
    ("delete", "/v1/schedules/{schedule_id}"): (
        "deleteSchedule",
        SECURED | {"204", "403", "404"},
    ),
    ("get", "/v1/me"): ("getSession", SECURED | {"200"}),
    ("get", "/v1/workers"): ("listWorkers", SECURED | {"200", "403"}),
    ("get", "/healthz"): ("healthz", OPEN | {"200"}),
    ("get", "/readyz"): ("readyz", OPEN | {"200", "503"}),
    ("get", "/metrics"): ("metrics", OPEN | {"200"}),
}
RATE_LIMIT = {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (the schema does not depend on the database)."""
    tmp: Path = tmp_path_factory.mktemp("openapi")
    running = Server(f"sqlite+aiosqlite:///{tmp / 'pocketrun.db'}", log_path=tmp / "server.log")
    yield running.start()
    running.kill()


@pytest.fixture(scope="module")
def spec(server: Server) -> dict[str, Any]:
    response = httpx.get(server.url + "/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every operation but the per-flow copies of createRun (tests/test_typed_client.py)."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if operation.get("tags") != ["flow runs"]:
                yield method, path, operation


def test_each_flow_s_operation_answers_as_create_run_does(spec: dict[str, Any]) -> None:
    create = spec["paths"]["/v1/flows/{flow}/runs"]["post"]
    typed = [
        item["post"]
        for item in spec["paths"].values()
        if item.get("post", {}).get("tags") == ["flow runs"]
    ]
    assert typed
    for operation in typed:
        assert operation["responses"] == create["responses"], operation["operationId"]
        assert operation["security"] == create["security"]


def test_every_operation_has_its_stable_camel_case_id(spec: dict[str, Any]) -> None:
    found = {(m, p): op.get("operationId") for m, p, op in operations(spec)}
    assert found == {key: op_id for key, (op_id, _) in OPERATIONS.items()}


def test_every_status_an_operation_answers_is_declared_and_no_other(spec) -> None:
    for method, path, operation in operations(spec):
        assert set(operation["responses"]) == OPERATIONS[method, path][1], (method, path)


def test_every_error_is_problem_json(spec: dict[str, Any]) -> None:
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                assert response["content"] == {PROBLEM: problem}, (method, path, code)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail"}
    errors = schemas["Problem"]["properties"]["errors"]["anyOf"][0]["items"]
    assert errors == {"$ref": "#/components/schemas/FieldError"}
    assert set(schemas["FieldError"]["required"]) == {"loc", "path", "msg", "type"}


def test_the_headers_sent_are_declared(spec: dict[str, Any]) -> None:
    def headers(method: str, path: str, code: str) -> dict[str, Any]:
        return spec["paths"][path][method]["responses"][code]["headers"]

    for code in ("201", "202"):
        created = headers("post", "/v1/flows/{flow}/runs", code)
        assert created["Location"]["required"] and created["ETag"]["required"]
        assert created["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
    for method, path, code in (
        ("get", "/v1/runs/{run_id}", "200"),
        ("get", "/v1/runs/{run_id}", "304"),
        ("post", "/v1/runs/{run_id}/cancel", "200"),
    ):
        assert headers(method, path, code)["ETag"]["required"]
    assert headers("post", "/v1/keys", "201")["Location"]["required"]
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            assert response["headers"]["X-Request-ID"]["required"]
            if "security" in operation:
                assert set(response["headers"]) >= RATE_LIMIT, (method, path, code)
        if "429" in operation["responses"]:
            limited = operation["responses"]["429"]["headers"]
            assert limited["Retry-After"] == {
                "description": "Seconds to wait",
                "schema": {"type": "integer"},
                "required": True,
            }
        if "401" in operation["responses"]:
            assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"]


def test_security_is_declared_where_a_credential_is_needed(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for method, path, operation in operations(spec):
        if path.startswith("/v1"):
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
        else:
            assert "security" not in operation, (method, path)


def test_metrics_are_documented_as_prometheus_text(server: Server, spec) -> None:
    ok = spec["paths"]["/metrics"]["get"]["responses"]["200"]
    assert ok["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert "Prometheus" in ok["description"]
    answer = httpx.get(server.url + "/metrics", timeout=30)
    assert answer.headers["content-type"].startswith("text/plain")


def test_answers_match_what_the_schema_says(server: Server) -> None:
    with server.client() as client:
        created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "o"}})
        assert created.status_code == 201
        assert created.headers["location"] and created.headers["etag"]
        assert created.headers["x-request-id"]
        run = client.get(created.headers["location"])
        assert run.json()["created_at"].endswith("Z")  # RFC 3339, as pydantic writes it
        for response in (
            client.get("/v1/runs/not-a-run"),
            client.get("/v1/runs", params={"created_after": "1700000000"}),
            client.post("/v1/flows/hello/runs", content=b"name=x"),
            httpx.get(server.url + "/v1/flows", timeout=30),
        ):
            assert response.status_code in (401, 404, 415, 422)
            assert response.headers["content-type"] == PROBLEM
        # a 405 names every method of the path, not only its first route's
        not_allowed = client.request("PUT", "/v1/keys")
        assert not_allowed.status_code == 405
        assert set(not_allowed.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
