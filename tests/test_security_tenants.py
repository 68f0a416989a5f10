"""Tenants, consumers, keys made by the CLI, the audit log, and the first admin key."""

from __future__ import annotations

import re
import time

import httpx

from tests.security_support import api_key, bearer, cli_key, pocketrun
from tests.support import TEST_AUTH, Server, wait_until


def _start(client: httpx.Client, name: str) -> str:
    response = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": name}})
    assert response.status_code in (201, 202), response.text
    return response.json()["id"]


def _ids(client: httpx.Client, path: str = "/v1/runs") -> set[str]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_tenants_and_consumers_see_only_their_own_runs(server: Server, db_url: str) -> None:
    star = bearer(cli_key(db_url, "admin", "*"))  # only the CLI can make a tenant-'*' admin
    keys = {
        name: bearer(api_key(server, role, tenant=tenant, as_=star)[1])
        for name, role, tenant in [
            ("a1", "consumer", "acme"),
            ("a2", "consumer", "acme"),
            ("a_ops", "operator", "acme"),
            ("b1", "consumer", "globex"),
            ("b_admin", "admin", "globex"),
        ]
    }

    def client(name: str) -> httpx.Client:
        headers = star if name == "star" else keys[name]
        return httpx.Client(base_url=server.url, headers=headers, timeout=30)

    with client("a1") as a1, client("a2") as a2, client("b1") as b1:
        r1, r2, r3 = _start(a1, "a1"), _start(a2, "a2"), _start(b1, "b1")
        # a consumer: only its own runs, everything else 404
        assert _ids(a1) == {r1}
        assert _ids(a2) == {r2}
        assert _ids(b1) == {r3}
        for other in (r2, r3):
            for path in (f"/v1/runs/{other}", f"/v1/runs/{other}/steps"):
                response = a1.get(path)
                assert response.status_code == 404, (path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
            assert a1.post(f"/v1/runs/{other}/cancel").status_code == 404
        assert a1.get(f"/v1/runs/{r1}").status_code == 200
    with client("a_ops") as ops, client("b_admin") as b_admin, client("star") as everyone:
        # an operator: the whole tenant, nothing of another tenant
        assert _ids(ops) == {r1, r2}
        assert ops.get(f"/v1/runs/{r3}").status_code == 404
        # an admin of one tenant is still inside its tenant
        assert _ids(b_admin) == {r3}
        assert b_admin.get(f"/v1/runs/{r1}").status_code == 404
        assert b_admin.post(f"/v1/runs/{r1}/cancel").status_code == 404
        made = b_admin.post("/v1/keys", json={"name": "x", "role": "admin", "tenant": "acme"})
        assert made.status_code == 403
        star_key = b_admin.post("/v1/keys", json={"name": "x", "role": "admin", "tenant": "*"})
        assert star_key.status_code in (403, 422)
        tenants = {k["tenant"] for k in b_admin.get("/v1/keys").json()["items"]}
        assert tenants == {"globex"}
        acme_key = next(
            k
            for k in everyone.get("/v1/keys?tenant=acme").json()["items"]
            if k["role"] == "operator"
        )
        assert b_admin.delete(f"/v1/keys/{acme_key['id']}").status_code == 404
        # the tenant-'*' admin crosses tenants
        assert {r1, r2, r3} <= _ids(everyone)
        assert everyone.get(f"/v1/runs/{r3}").status_code == 200
        # the audit log: per tenant for a tenant's admin, all of it for '*'
        audit = b_admin.get("/v1/audit").json()["items"]
        assert {e["tenant"] for e in audit} == {"globex"}
        assert [e["target"] for e in audit if e["action"] == "run.start"] == [r3]
        every = everyone.get("/v1/audit?limit=500").json()["items"]
        assert {r1, r2, r3} <= {e["target"] for e in every if e["action"] == "run.start"}
        assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)


def test_mutating_calls_are_audited_with_request_ids(server: Server) -> None:
    key_id, consumer = api_key(server, "consumer")
    with httpx.Client(base_url=server.url, headers=bearer(consumer), timeout=30) as client:
        started = client.post(
            "/v1/flows/hello/runs?wait=10",
            json={"input": {"name": "audited"}},
            headers={"X-Request-ID": "req-start-1"},
        )
        run_id = started.json()["id"]
        client.post(f"/v1/runs/{run_id}/cancel", headers={"X-Request-ID": "req-cancel-1"})
        client.get(f"/v1/runs/{run_id}")  # reads are not audited
    with httpx.Client(base_url=server.url, headers=TEST_AUTH, timeout=30) as admin:
        assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
        entries = admin.get("/v1/audit").json()["items"]
        by_action = {e["action"]: e for e in entries}
        assert set(by_action) >= {"key.create", "run.start", "key.revoke"}
        start = by_action["run.start"]
        assert start["target"] == run_id
        assert start["request_id"] == "req-start-1"
        assert start["principal"] == f"key:{key_id}"
        assert start["tenant"] == "default" and start["role"] == "consumer"
        assert by_action["key.revoke"]["target"] == key_id
        assert by_action["key.create"]["target"] == key_id
        assert not any(e["action"].startswith("run.read") for e in entries)
        if "run.cancel" in by_action:  # a run that already finished answers 409: not audited
            assert by_action["run.cancel"]["request_id"] == "req-cancel-1"
        page = admin.get("/v1/audit?limit=1").json()
        assert len(page["items"]) == 1 and page["next_cursor"]
        rest = admin.get(f"/v1/audit?limit=500&cursor={page['next_cursor']}").json()["items"]
        assert [page["items"][0]["id"], *[e["id"] for e in rest]] == [e["id"] for e in entries]
        assert admin.get("/v1/audit?cursor=nope").status_code == 422


def test_cli_keys_work_at_once_and_revocation_bites_within_the_cache_ttl(
    server_factory, db_url: str
) -> None:
    server = server_factory({"POCKETRUN_AUTH_CACHE_TTL": "1"})
    key = cli_key(db_url, "operator", "default", "--name", "ops", "--expires", "1d")
    with httpx.Client(base_url=server.url, headers=bearer(key), timeout=30) as client:
        assert client.get("/v1/runs").status_code == 200
        assert client.get("/v1/keys").status_code == 403
        listing = pocketrun(db_url, "keys", "list")
        assert listing.returncode == 0, listing.stderr
        assert key not in listing.stdout  # never shown again
        key_id = next(
            line.split("│")[1].strip() for line in listing.stdout.splitlines() if "ops" in line
        )
        revoked = pocketrun(db_url, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        wait_until(lambda: client.get("/v1/runs").status_code == 401, 5, 0.1, "revocation")
        assert time.monotonic() - started < 3
    assert pocketrun(db_url, "keys", "revoke", "nope").returncode == 1


def test_first_start_prints_an_admin_key_once_and_admin_key_seeding_is_idempotent(
    server_factory, tmp_path
) -> None:
    first = server_factory({"POCKETRUN_ADMIN_KEY": ""})
    log = (tmp_path / "server0.log").read_text()
    keys = re.findall(r"prk_[A-Za-z0-9_-]{43}", log)
    assert keys, log
    key = keys[0]
    with httpx.Client(base_url=first.url, headers=bearer(key), timeout=30) as client:
        assert client.get("/v1/audit").status_code == 200
        listed = client.get("/v1/keys").json()["items"]
        assert [(k["role"], k["tenant"]) for k in listed] == [("admin", "default")]
        assert all(key not in str(item) for item in listed)
    first.kill()
    second = server_factory({"POCKETRUN_ADMIN_KEY": ""})  # keys exist now: nothing printed
    assert "prk_" not in (tmp_path / "server1.log").read_text()
    second.kill()
    # POCKETRUN_ADMIN_KEY: that exact key, stored once however often the servers start
    third = server_factory()
    fourth = server_factory()
    for srv in (third, fourth):
        assert httpx.get(srv.url + "/v1/audit", headers=TEST_AUTH).status_code == 200
    names = [
        k["name"] for k in httpx.get(third.url + "/v1/keys", headers=TEST_AUTH).json()["items"]
    ]
    assert names.count("admin (POCKETRUN_ADMIN_KEY)") == 1
