"""Hostile input at the edge, table-driven, on SQLite and on PostgreSQL: text PostgreSQL
can't store (NUL, lone surrogates, invalid UTF-8, raw or percent-encoded) in every place
that reaches the database, date-times at the calendar's edges, bodies that are not UTF-8,
and JWT claims holding such text. Each answers its 4xx as problem+json, never a 5xx; the
server logs no unhandled error and still serves normal calls afterwards.

A JWT whose ``sub`` or tenant claim holds unstorable text is 401 ``invalid_token``: the
credential is unusable, like one with a missing claim. NUL or other control bytes in a
header never reach the app (uvicorn refuses the request itself), so headers are tested
with bytes outside printable ASCII instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest

from core.text import unstorable, unstorable_bytes
from tests.support import Server

PROBLEM = "application/problem+json"
SECRET = "hostile-input-jwt-secret-0123456789abcdef"
RUN = "01900000-0000-7000-8000-000000000000"
JSON = {"content-type": "application/json"}


def token(**claims: Any) -> str:
    payload = {"sub": "alice", "tenant": "default", "role": "admin", "exp": time.time() + 600}
    return jwt.encode({**payload, **claims}, SECRET, algorithm="HS256")


@dataclass
class Case:
    name: str
    method: str
    path: str  # sent as written: percent escapes and all
    status: int
    body: bytes | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # field paths the 422's errors[] must name


def key(body: bytes, status: int = 422, *names: str, name: str = "") -> Case:
    return Case(name or body.decode("latin-1"), "POST", "/v1/keys", status, body, JSON, names)


def expiring(moment: str) -> Case:
    body = b'{"name": "k", "role": "consumer", "expires_at": "%s"}' % moment.encode()
    return key(body, 422, "body.expires_at", name=f"key expires_at {moment}")


def listed(query: str, *names: str) -> Case:
    return Case(f"runs {query}", "GET", f"/v1/runs?{query}", 422, names=names)


def jwt_case(name: str, **claims: Any) -> Case:
    auth = {"Authorization": f"Bearer {token(**claims)}"}
    return Case(f"jwt {name}", "GET", "/v1/runs", 401, headers=auth)


CASES: list[Case] = [
    # --- query strings
    listed("flow=%00", "query.flow"),
    listed("flow=a%ED%A0%80", "query.flow"),
    listed("flow=%FF", "query.flow"),
    listed("cursor=%00", "query.cursor"),
    listed("status=queued&x%00=1", "query.x"),
    Case("keys tenant NUL", "GET", "/v1/keys?tenant=a%00", 422, names=("query.tenant",)),
    Case("keys cursor NUL", "GET", "/v1/keys?cursor=%00", 422, names=("query.cursor",)),
    Case("keys cursor surrogate", "GET", "/v1/keys?cursor=%ED%A0%80", 422),
    Case("audit action NUL", "GET", "/v1/audit?action=%00", 422, names=("query.action",)),
    Case("audit action bad utf-8", "GET", "/v1/audit?action=%C3%28", 422),
    Case("wait NUL", "GET", f"/v1/runs/{RUN}?wait=1%00", 422, names=("query.wait",)),
    # --- paths
    Case("run id NUL", "GET", "/v1/runs/%00", 422, names=("path",)),
    Case("run id surrogate", "GET", "/v1/runs/%ED%A0%80", 422, names=("path",)),
    Case("steps of bad utf-8", "GET", "/v1/runs/%FF%FE/steps", 422, names=("path",)),
    Case("cancel NUL", "POST", f"/v1/runs/{RUN}%00/cancel", 422, names=("path",)),
    Case("flow NUL", "GET", "/v1/flows/hello%00", 422, names=("path",)),
    Case("start run on NUL flow", "POST", "/v1/flows/a%00/runs", 422, b"{}", JSON, ("path",)),
    Case("revoke key NUL", "DELETE", "/v1/keys/%00", 422, names=("path",)),
    Case("revoke key surrogate", "DELETE", "/v1/keys/%ED%B0%80", 422, names=("path",)),
    # --- stored headers
    Case(
        "idempotency key not ascii",
        "POST",
        "/v1/flows/hello/runs",
        422,
        b'{"input": {"name": "a"}}',
        {**JSON, "Idempotency-Key": b"k\xed\xa0\x80"},
        ("header.idempotency-key",),
    ),
    # --- JSON bodies
    key(b'{"name": "a\\u0000b", "role": "consumer"}', 422, "body.name"),
    key(b'{"name": "\\ud800", "role": "consumer"}'),
    key(b'{"name": "k", "role": "consumer\\u0000"}', 422, "body.role"),
    key(b'{"name": "k", "role": "consumer", "tenant": "t\\u0000"}', 422, "body.tenant"),
    key(b'{"name": "\xff", "role": "consumer"}', name="key name not utf-8"),
    key(b'{"name": "\xed\xa0\x80", "role": "consumer"}', name="key name raw surrogate"),
    Case(
        "run metadata nested NUL",
        "POST",
        "/v1/flows/hello/runs",
        422,
        b'{"input": {"name": "a"}, "metadata": {"k": [{"v": "\\u0000"}]}}',
        JSON,
        ("body.metadata.k.0.v",),
    ),
    Case(
        "run input not utf-8",
        "POST",
        "/v1/flows/hello/runs",
        422,
        b'{"input": {"name": "\xc3\x28"}}',
        JSON,
    ),
    Case("cancel body not utf-8", "POST", f"/v1/runs/{RUN}/cancel", 422, b'"\xff"', JSON),
    key(b"\xff\xfe{\x00}\x00", name="key body in UTF-16"),
    key(b"[" * 1500 + b"]" * 1500, name="key body deeper than the parser"),
    key(b'{"name": "k", "role": "consumer"}'.decode().encode("utf-32"), name="key body in UTF-32"),
    # --- the calendar's edges
    expiring("0001-01-01T00:00:00+01:00"),
    expiring("9999-12-31T23:59:59-23:59"),
    expiring("10000-01-01T00:00:00Z"),
    expiring("+9999-12-31T23:59:59Z"),
    listed("created_after=0001-01-01T00:00:00%2B00:01", "query.created_after"),
    listed("created_before=9999-12-31T23:59:59-23:59", "query.created_before"),
    listed("created_after=10000-01-01T00:00:00Z", "query.created_after"),
    listed("created_before=-0001-01-01T00:00:00Z", "query.created_before"),
    # --- JWT claims
    jwt_case("sub NUL", sub="a\x00"),
    jwt_case("sub surrogate", sub="\ud800"),
    jwt_case("tenant NUL", tenant="t\x00"),
    jwt_case("tenant surrogate", tenant="\udfff"),
    jwt_case("role surrogate", role="\ud800admin"),
]


def send(client: httpx.Client, case: Case) -> httpx.Response:
    # The path goes out byte for byte (httpx would re-encode it otherwise).
    url = httpx.URL(client.base_url.join("/"), raw_path=case.path.encode("ascii"))
    return client.request(case.method, url, content=case.body, headers=case.headers)


def check(case: Case, response: httpx.Response) -> list[str]:
    found = f"{case.name}: {response.status_code} {response.text[:300]!r}"
    if response.status_code >= 500:
        return [f"5xx! {found}"]
    if response.status_code != case.status:
        return [f"expected {case.status}; {found}"]
    if not response.headers.get("content-type", "").startswith(PROBLEM):
        return [f"not problem+json; {found}"]
    body = response.json()
    if body.get("status") != case.status:
        return [f"body status differs; {found}"]
    named = {e.get("path") for e in body.get("errors") or []}
    if case.status == 422 and not named:
        return [f"no errors[]; {found}"]
    missing = [n for n in case.names if n not in named]
    return [f"errors[] does not name {missing}; {found}"] if missing else []


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory(env={"POCKETRUN_JWT_SECRET": SECRET})


def test_hostile_input_is_refused_with_4xx_problems_never_5xx(server: Server) -> None:
    failures: list[str] = []
    with server.client() as client:
        for case in CASES:
            try:
                failures.extend(check(case, send(client, case)))
            except httpx.HTTPError as exc:
                failures.append(f"{case.name}: {type(exc).__name__}: {exc}")
        assert not failures, "\n".join(failures)

        # Nothing was stored, and the server goes on serving.
        assert client.get("/v1/runs").json()["items"] == []
        keys = client.get("/v1/keys").json()["items"]
        assert [k["name"] for k in keys] == ["admin (POCKETRUN_ADMIN_KEY)"]
        created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "ok"}})
        assert created.status_code == 201, created.text
    assert "unhandled error" not in server.log_path.read_text()


def test_the_calendars_first_and_last_moments_work_on_every_database(server: Server) -> None:
    """Moments with a UTC form are taken and work end to end; only those without are 422."""
    with server.client() as client:
        for moment, works in (("9999-12-31T23:59:59Z", True), ("0001-01-01T00:00:00Z", False)):
            body = {"name": "edge", "role": "consumer", "expires_at": moment}
            created = client.post("/v1/keys", json=body)
            assert created.status_code == 201, created.text
            assert created.json()["expires_at"] == moment
            own = {"Authorization": f"Bearer {created.json()['key']}"}
            answer = client.get("/v1/runs", headers=own)
            assert answer.status_code == (200 if works else 401), answer.text
            listed = client.get("/v1/keys").json()["items"]
            assert moment in {k["expires_at"] for k in listed}
        for query in (
            "created_after=0001-01-01T00:00:00Z",
            "created_before=9999-12-31T23:59:59.999999Z",
            "created_after=0001-01-01T00:00:00-23:59&created_before=9999-12-31T23:59:59%2B23:59",
        ):
            listed = client.get(f"/v1/runs?{query}")
            assert listed.status_code == 200, (query, listed.text)


def test_a_token_with_usable_claims_still_works(server: Server) -> None:
    """The JWT cases above fail for their text alone: the same token with plain text works."""
    with server.client() as client:
        plain = {"Authorization": f"Bearer {token(sub='a-b', tenant='default')}"}
        assert client.get("/v1/runs", headers=plain).status_code == 200
        accented = {"Authorization": f"Bearer {token(sub='zoë')}"}
        assert client.get("/v1/runs", headers=accented).status_code == 200


def test_the_one_predicate() -> None:
    assert unstorable("plain") is None and unstorable("zoë ✓ 🙂") is None
    assert unstorable("a\x00") and unstorable("\ud800") and unstorable("x\udfffy")
    assert unstorable_bytes(b"a%20b") is None and unstorable_bytes(b"%C3%A9") is None
    for raw in (b"%00", b"%ED%A0%80", b"%FF", b"%C3%28", b"\xff", b"a\x00"):
        assert unstorable_bytes(raw), raw
    assert unstorable_bytes(b"a+b", plus_is_space=True) is None
