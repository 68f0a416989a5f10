"""Bad input on every endpoint answers 4xx application/problem+json, never 5xx.

Each case is sent over HTTP to a real ``pocketrun serve`` (SQLite and PostgreSQL). After
all of them the server still serves normal requests, and no rejected request left a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import Server, wait_for_run

PROBLEM = "application/problem+json"
MAX_BODY = 4096
UNKNOWN_RUN = "01900000-0000-7000-8000-000000000000"
LONG = "x" * 5000


@dataclass
class Case:
    name: str
    method: str
    path: str
    status: int | tuple[int, ...]  # the one answer, or those acceptable
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: Any = None
    paths: tuple[str, ...] = ()  # field paths the 422 must name
    chunked: bool = False


def post_run(
    name: str, body: Any, status: int | tuple[int, ...] = 422, *paths: str, flow: str = "hello"
) -> Case:
    """A run creation with a JSON body (``body`` bytes are sent as they are)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(
        name,
        "POST",
        f"/v1/flows/{flow}/runs",
        status,
        content=content,
        headers={"content-type": "application/json"},
        paths=paths,
    )


def _chunks(data: bytes, size: int = 512) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


HELLO = {"input": {"name": "ok"}}
BIG = json.dumps({"input": {"name": "a"}, "metadata": {"pad": "y" * (MAX_BODY + 500)}}).encode()

CASES: list[Case] = [
    # --- POST /v1/flows/{flow}/runs: the body
    post_run("malformed json", b'{"input": {"name": "a"', 422, "body"),
    post_run("not json at all", b"hello there", 422, "body"),
    post_run("json array", [1, 2], 422, "body"),
    post_run("json string", "text", 422, "body"),
    post_run("json null", None, 422, "body"),
    post_run("json number", 42, 422, "body"),
    post_run("empty body", b"", 422, "body"),
    post_run("input is a list", {"input": [1]}, 422, "body.input"),
    post_run("input is a string", {"input": "name=a"}, 422, "body.input"),
    post_run("unknown body field", {"input": {}, "colour": "red"}, 422, "body.colour"),
    post_run("mode unknown", {"input": {}, "mode": "fast"}, 422, "body.mode"),
    post_run("mode wrong type", {"input": {}, "mode": 1}, 422, "body.mode"),
    post_run("priority too high", {"input": {}, "priority": 10}, 422, "body.priority"),
    post_run("priority negative", {"input": {}, "priority": -1}, 422, "body.priority"),
    post_run("priority a word", {"input": {}, "priority": "high"}, 422, "body.priority"),
    post_run("priority a bool", {"input": {}, "priority": True}, 422, "body.priority"),
    post_run("priority a float", {"input": {}, "priority": 1.5}, 422, "body.priority"),
    post_run("priority numeric string", {"input": {}, "priority": "5"}, 422, "body.priority"),
    post_run("metadata a list", {"input": {}, "metadata": []}, 422, "body.metadata"),
    post_run("metadata a string", {"input": {}, "metadata": "x"}, 422, "body.metadata"),
    # the flow's pydantic schema
    post_run("schema: empty name", {"input": {"name": ""}}, 422, "body.input.name"),
    post_run("schema: name not a string", {"input": {"name": 12}}, 422, "body.input.name"),
    post_run("schema: name too long", {"input": {"name": "n" * 101}}, 422, "body.input.name"),
    post_run(
        "schema: two fields",
        {"input": {"steps": 0, "delay": "slow"}},
        422,
        "body.input.steps",
        "body.input.delay",
        flow="long",
    ),
    post_run(
        "schema: required", {"input": {"steps": 1}}, 422, "body.input.log", flow="edge-counted"
    ),
    # values no database can keep
    post_run("NUL in input", b'{"input": {"name": "a\\u0000b"}}', 422, "body.input.name"),
    post_run("NUL in metadata key", b'{"metadata": {"a\\u0000": 1}}', 422, "body.metadata.a\x00"),
    # (strict JSON is checked before the body is parsed: these may name only "body")
    post_run("lone surrogate", b'{"metadata": {"k": ["\\ud800"]}}', 422),
    post_run("NaN", b'{"metadata": {"k": NaN}}', 422),
    post_run("Infinity", b'{"metadata": {"k": -Infinity}}', 422),
    post_run("huge float", b'{"metadata": {"k": 1e999}}', 422),
    post_run(
        "int past 64 bits", b'{"metadata": {"k": 36893488147419103232}}', 422, "body.metadata.k"
    ),
    post_run("too deep", {"metadata": {"k": json.loads("[" * 150 + "]" * 150)}}, 422),
    post_run("deeper than the parser", b"[" * 1500 + b"]" * 1500, 422),
    post_run("invalid utf-8", b'{"input": {"name": "\xff\xfe"}}', 422, "body"),
    Case(
        "not json content type",
        "POST",
        "/v1/flows/hello/runs",
        415,
        content=json.dumps(HELLO).encode(),
        headers={"content-type": "text/plain"},
    ),
    Case(
        "no content type",
        "POST",
        "/v1/flows/hello/runs",
        415,
        content=json.dumps(HELLO).encode(),
    ),
    Case(
        "form content type",
        "POST",
        "/v1/keys",
        415,
        content=b"name=k&role=admin",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    # the query, the headers, the path
    Case(
        "wait negative", "POST", "/v1/flows/hello/runs?wait=-1", 422, HELLO, paths=("query.wait",)
    ),
    Case(
        "wait a word", "POST", "/v1/flows/hello/runs?wait=soon", 422, HELLO, paths=("query.wait",)
    ),
    Case("wait nan", "POST", "/v1/flows/hello/runs?wait=nan", 422, HELLO, paths=("query.wait",)),
    Case(
        "idempotency key too long",
        "POST",
        "/v1/flows/hello/runs",
        422,
        HELLO,
        headers={"Idempotency-Key": "k" * 256},
        paths=("header.idempotency-key",),
    ),
    Case(
        "idempotency key empty",
        "POST",
        "/v1/flows/hello/runs",
        422,
        HELLO,
        headers={"Idempotency-Key": ""},
        paths=("header.idempotency-key",),
    ),
    Case("unknown flow", "POST", "/v1/flows/no-such-flow/runs", 404, HELLO),
    Case("very long flow name", "POST", f"/v1/flows/{LONG}/runs", 404, HELLO),
    Case("flow name with NUL", "POST", "/v1/flows/a%00b/runs", 422, HELLO, paths=("path",)),
    # size
    Case(
        "body over the limit",
        "POST",
        "/v1/flows/hello/runs",
        413,
        content=BIG,
        headers={"content-type": "application/json"},
    ),
    Case(
        "body over the limit, chunked",
        "POST",
        "/v1/flows/hello/runs",
        413,
        content=BIG,
        headers={"content-type": "application/json"},
        chunked=True,
    ),
    Case(
        "chunked to an unknown flow",
        "POST",
        "/v1/flows/no-such-flow/runs",
        413,
        content=BIG,
        headers={"content-type": "application/json"},
        chunked=True,
    ),
    # --- GET /v1/runs/{id}, steps, cancel
    Case("unknown run", "GET", f"/v1/runs/{UNKNOWN_RUN}", 404),
    Case("malformed run id", "GET", "/v1/runs/not-a-uuid", 404),
    Case("run id too long", "GET", f"/v1/runs/{LONG}", 404),
    Case("run id with NUL", "GET", "/v1/runs/%00", 422, paths=("path",)),
    Case("run id, sql", "GET", "/v1/runs/1%27%20OR%20%271%27=%271", 404),
    Case("get wait negative", "GET", f"/v1/runs/{UNKNOWN_RUN}?wait=-3", 422, paths=("query.wait",)),
    Case("get wait a word", "GET", f"/v1/runs/{UNKNOWN_RUN}?wait=x", 422, paths=("query.wait",)),
    Case(
        "if-none-match too long",
        "GET",
        f"/v1/runs/{UNKNOWN_RUN}",
        422,
        headers={"If-None-Match": "x" * 300},
        paths=("header.if-none-match",),
    ),
    Case("steps of unknown run", "GET", f"/v1/runs/{UNKNOWN_RUN}/steps", 404),
    Case("steps of malformed id", "GET", "/v1/runs/zzz/steps", 404),
    Case("cancel unknown run", "POST", f"/v1/runs/{UNKNOWN_RUN}/cancel", 404),
    Case("cancel malformed id", "POST", f"/v1/runs/{LONG}/cancel", 404),
    # --- GET /v1/runs
    Case("limit zero", "GET", "/v1/runs", 422, params={"limit": 0}, paths=("query.limit",)),
    Case("limit 501", "GET", "/v1/runs", 422, params={"limit": 501}, paths=("query.limit",)),
    Case("limit negative", "GET", "/v1/runs", 422, params={"limit": -5}, paths=("query.limit",)),
    Case("limit a word", "GET", "/v1/runs", 422, params={"limit": "all"}, paths=("query.limit",)),
    Case(
        "bad status", "GET", "/v1/runs", 422, params={"status": "done"}, paths=("query.status.0",)
    ),
    Case(
        "one bad status of two",
        "GET",
        "/v1/runs",
        422,
        params=[("status", "queued"), ("status", "nope")],
        paths=("query.status.1",),
    ),
    Case(
        "bad cursor", "GET", "/v1/runs", 422, params={"cursor": "page-2"}, paths=("query.cursor",)
    ),
    Case("long cursor", "GET", "/v1/runs", 422, params={"cursor": LONG}, paths=("query.cursor",)),
    Case(
        "bad created_after",
        "GET",
        "/v1/runs",
        422,
        params={"created_after": "yesterday"},
        paths=("query.created_after",),
    ),
    Case(
        "impossible date",
        "GET",
        "/v1/runs",
        422,
        params={"created_before": "2024-13-45"},
        paths=("query.created_before",),
    ),
    Case(
        "date out of range in UTC",
        "GET",
        "/v1/runs",
        422,
        params={"created_after": "9999-12-31T23:59:59-12:00"},
        paths=("query.created_after",),
    ),
    Case("long flow filter", "GET", "/v1/runs", 422, params={"flow": LONG}, paths=("query.flow",)),
    Case(
        "NUL in flow filter",
        "GET",
        "/v1/runs",
        422,
        params={"flow": "a\x00b"},
        paths=("query.flow",),
    ),
    # --- flows
    Case("unknown flow detail", "GET", "/v1/flows/no-such-flow", 404),
    Case("long flow detail", "GET", f"/v1/flows/{LONG}", 404),
    Case("unknown flow version", "GET", "/v1/flows/hello?version=99", 404),
    # --- routes and methods
    Case("unknown route", "GET", "/v1/nothing-here", 404),
    Case("unknown root route", "GET", "/admin.php", 404),
    Case("too deep a route", "GET", f"/v1/runs/{UNKNOWN_RUN}/steps/1/more", 404),
    Case("DELETE runs", "DELETE", "/v1/runs", 405),
    Case("POST runs", "POST", "/v1/runs", 405, HELLO),
    Case("PUT flow runs", "PUT", "/v1/flows/hello/runs", 405, HELLO),
    Case("PATCH flow", "PATCH", "/v1/flows/hello", 405, HELLO),
    Case("DELETE run", "DELETE", f"/v1/runs/{UNKNOWN_RUN}", 405),
    Case("GET cancel", "GET", f"/v1/runs/{UNKNOWN_RUN}/cancel", 405),
    Case("POST healthz", "POST", "/healthz", 405),
]


def send(client: httpx.Client, case: Case) -> httpx.Response:
    content: Any = case.content
    if case.chunked:
        content = _chunks(case.content or b"")
    if case.json is not None:
        return client.request(
            case.method, case.path, json=case.json, headers=case.headers, params=case.params
        )
    return client.request(
        case.method, case.path, content=content, headers=case.headers, params=case.params
    )


def check(case: Case, response: httpx.Response) -> list[str]:
    """What is wrong with the answer to ``case``; empty when it is right."""
    found = f"{case.name}: {response.status_code} {response.text[:300]!r}"
    if response.status_code >= 500:
        return [f"5xx! {found}"]
    allowed = case.status if isinstance(case.status, tuple) else (case.status,)
    if response.status_code not in allowed:
        return [f"expected {case.status}; {found}"]
    if not response.headers.get("content-type", "").startswith(PROBLEM):
        return [f"not problem+json ({response.headers.get('content-type')}); {found}"]
    body = response.json()
    problems = []
    for key, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        if not isinstance(body.get(key), kind):
            problems.append(f"'{key}' missing or not {kind.__name__}; {found}")
    if body.get("status") != response.status_code:
        problems.append(f"body status differs; {found}")
    if response.status_code == 422:
        errors = body.get("errors")
        if not isinstance(errors, list) or not errors:
            return [*problems, f"no errors[]; {found}"]
        for error in errors:
            if not isinstance(error.get("loc"), list) or not isinstance(error.get("path"), str):
                problems.append(f"an error without loc/path: {error}; {found}")
            elif error["path"] != ".".join(map(str, error["loc"])):
                problems.append(f"path and loc disagree: {error}; {found}")
        named = {e.get("path") for e in errors}
        missing = [p for p in case.paths if p not in named]
        if missing:
            problems.append(f"errors[] does not name {missing}; {found}")
    if response.status_code == 405 and "allow" not in response.headers:
        problems.append(f"405 without Allow; {found}")
    return problems


def test_bad_input_answers_4xx_problem_json_and_creates_nothing(server_factory) -> None:
    server: Server = server_factory(env={"POCKETRUN_MAX_BODY_BYTES": str(MAX_BODY)})
    failures: list[str] = []
    with server.client() as client:
        for case in CASES:
            try:
                response = send(client, case)
            except httpx.HTTPError as exc:
                failures.append(f"{case.name}: {type(exc).__name__}: {exc}")
                continue
            failures.extend(check(case, response))
        assert not failures, "\n".join(failures)

        # Nothing was created by any of them, and the server still serves normal requests.
        assert client.get("/v1/runs").json() == {"items": [], "next_cursor": None}
        health = client.get("/readyz")
        assert health.status_code == 200, health.text
        created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "after"}})
        assert created.status_code == 201, created.text
        assert created.json()["output"] == {"greeting": "HELLO, AFTER!"}
        below = {"input": {"name": "a"}, "metadata": {"pad": "y" * (MAX_BODY - 200)}}
        assert len(json.dumps(below)) < MAX_BODY
        accepted = client.post("/v1/flows/hello/runs?wait=10", json=below)
        assert accepted.status_code == 201, accepted.text
        chunked = client.post(
            "/v1/flows/hello/runs?wait=10",
            content=_chunks(json.dumps(below).encode(), 256),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 201, chunked.text
        runs = client.get("/v1/runs").json()["items"]
        assert len(runs) == 3
        for run in runs:
            assert wait_for_run(client, run["id"])["status"] == "succeeded"


def test_bad_input_against_existing_runs(server: Server) -> None:
    """The same run endpoints, on a run that exists: bad parameters still answer 4xx."""
    with server.client() as client:
        run = client.post("/v1/flows/hello/runs?wait=10", json=HELLO).json()
        run_id = run["id"]
        cases = [
            Case("wait negative", "GET", f"/v1/runs/{run_id}?wait=-1", 422, paths=("query.wait",)),
            Case("wait infinite-ish", "GET", f"/v1/runs/{run_id}?wait=1e999x", 422),
            Case("id in upper case braces", "GET", f"/v1/runs/{{{run_id.upper()}}}x", 404),
            Case("cancel finished", "POST", f"/v1/runs/{run_id}/cancel", 409),
            Case(
                "replay, other body",
                "POST",
                "/v1/flows/hello/runs",
                422,
                {"input": {"name": "b"}},
                headers={"Idempotency-Key": "fixed"},
                paths=("header.idempotency-key",),
            ),
        ]
        assert (
            client.post(
                "/v1/flows/hello/runs",
                json={"input": {"name": "a"}},
                headers={"Idempotency-Key": "fixed"},
            ).status_code
            == 201
        )
        failures = [f for case in cases for f in check(case, send(client, case))]
        assert not failures, "\n".join(failures)
        assert len(client.get("/v1/runs").json()["items"]) == 2
        for past in (2**31 - 1, 3466251108, 9999999999):  # past a 32-bit seq: no overflow 500
            last = client.get(f"/v1/runs/{run_id}/steps", params={"cursor": past})
            assert last.status_code == 200, last.text
            assert last.json() == {"items": [], "next_cursor": None}, last.text
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
