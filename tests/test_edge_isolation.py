"""The API edge keeps callers apart: audit targets in one spelling, key cursors that say
nothing of other tenants, internals (node graphs, worker names) for ``flows:internals``
only, invalid-key floods that cost no database query past the rate limit, and refused
calls in the audit log. Each on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import secrets

import httpx

from core.principal import Role
from tests.security_support import api_key, bearer, cli_key
from tests.support import Server

HELLO = {"input": {"name": "edge"}}


def metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def audit(client: httpx.Client, **params: str) -> list[dict]:
    response = client.get("/v1/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_cancel_is_audited_under_the_canonical_run_id(server: Server) -> None:
    with server.client() as client:
        run = client.post("/v1/flows/long/runs", json={"input": {"steps": 50, "delay": 0.05}})
        assert run.status_code == 202, run.text
        run_id = run.json()["id"]
        spelled = f"urn:uuid:{run_id.upper()}"
        cancelled = client.post(f"/v1/runs/{spelled}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        entries = audit(client, action="run.cancel")
        assert [e["target"] for e in entries] == [run_id]


def test_a_key_cursor_of_another_tenant_answers_as_an_unknown_one(
    server: Server, db_url: str
) -> None:
    api_key(server, "consumer")
    api_key(server, "operator")
    # Newer than this tenant's keys: as an anchor it would page through all of them.
    star = bearer(cli_key(db_url, "admin", "*"))
    cli_key(db_url, "consumer", "other")
    with server.client() as client:
        others = client.get("/v1/keys", params={"tenant": "other"}, headers=star).json()
        other_id = others["items"][0]["id"]
        unknown = client.get("/v1/keys", params={"cursor": secrets.token_hex(8)})
        foreign = client.get("/v1/keys", params={"cursor": other_id})
        assert unknown.status_code == foreign.status_code == 200
        assert foreign.json() == unknown.json() == {"items": [], "next_cursor": None}


def test_internals_only_with_the_flows_internals_permission(server: Server) -> None:
    consumer = bearer(api_key(server, Role.consumer)[1])
    operator = bearer(api_key(server, Role.operator)[1])
    engineer = bearer(api_key(server, Role.engineer)[1])
    with server.client() as client:
        run = client.post("/v1/flows/hello/runs?wait=10", json=HELLO, headers=consumer)
        assert run.status_code == 201, run.text
        steps_path = f"/v1/runs/{run.json()['id']}/steps"
        for who, sees in ((consumer, False), (operator, False), (engineer, True), ({}, True)):
            flow = client.get("/v1/flows/hello", headers=who).json()
            assert (flow["graph"] is not None) is sees and (flow["mermaid"] is not None) is sees
            if sees:
                assert flow["graph"]["nodes"] and "flowchart" in flow["mermaid"]
            steps = client.get(steps_path, headers=who).json()["items"]
            assert steps and all((s["worker"] is not None) is sees for s in steps)
        ready = client.get("/readyz", headers={"Authorization": ""})
        assert ready.status_code == 200
        assert "worker" not in ready.json()["checks"]["executor"]


def test_an_invalid_key_flood_is_refused_before_any_lookup(server_factory) -> None:
    server: Server = server_factory(env={"POCKETRUN_RATE_LIMIT": "5/minute"})
    with server.client() as client:
        before = metric(client, "pocketrun_auth_key_lookups_total")
        answers = []
        for _ in range(30):  # a new key every time: no cache can help
            flood = bearer("prk_" + secrets.token_urlsafe(32))
            answers.append(client.get("/v1/runs", headers=flood).status_code)
        assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
        # The five within the limit were looked up; the 25 past it never reached the database.
        assert metric(client, "pocketrun_auth_key_lookups_total") - before == 5


def test_an_unknown_key_repeated_is_looked_up_once_and_a_new_key_works_at_once(
    server: Server, db_url: str
) -> None:
    with server.client() as client:
        wrong = bearer("prk_" + secrets.token_urlsafe(32))
        before = metric(client, "pocketrun_auth_key_lookups_total")
        for _ in range(20):
            assert client.get("/v1/runs", headers=wrong).status_code == 401
        assert metric(client, "pocketrun_auth_key_lookups_total") - before == 1
        # New keys, through this API and through the CLI, work on their first call.
        fresh = bearer(api_key(server, "consumer")[1])
        assert client.get("/v1/runs", headers=fresh).status_code == 200
        made_elsewhere = bearer(cli_key(db_url, "consumer", "default"))
        assert client.get("/v1/runs", headers=made_elsewhere).status_code == 200


def test_refused_calls_are_audited(server: Server, db_url: str) -> None:
    consumer_id, consumer = api_key(server, "consumer")
    star = bearer(cli_key(db_url, "admin", "*"))
    with server.client() as client:
        wrong = "prk_" + secrets.token_urlsafe(32)
        assert client.get("/v1/runs", headers=bearer(wrong)).status_code == 401
        assert client.get("/v1/runs", headers={"Authorization": ""}).status_code == 401
        assert client.get("/v1/keys", headers=bearer(consumer)).status_code == 403

        denied = audit(client, action="access.denied")  # the tenant's admin sees its 403
        assert len(denied) == 1
        assert denied[0]["principal"] == f"key:{consumer_id}" and denied[0]["status"] == 403
        assert denied[0]["detail"]["permission"] == "keys:read"
        assert audit(client, action="auth.denied") == []  # no tenant: not this admin's

        failed = client.get("/v1/audit", params={"action": "auth.denied"}, headers=star)
        entries = failed.json()["items"]
        assert [e["status"] for e in entries] == [401, 401]
        assert {e["principal"] for e in entries} == {"anonymous"}
        assert entries[1]["detail"]["key_prefix"] == wrong[:10]
        assert wrong not in failed.text  # never the key itself
