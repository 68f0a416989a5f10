"""Outbound webhooks (DESIGN.md section 10): signed, retried until a 2xx, logged, never
sent to private addresses unless allowed, never in a run's way; both databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests import celery_support as cs
from tests.security_support import bearer, cli_key, pocketrun
from tests.support import Server, wait_for_run, wait_until
from tests.webhook_support import Receiver, verify

ALLOW = {"POCKETRUN_WEBHOOK_ALLOW_PRIVATE": "true", "POCKETRUN_WEBHOOK_RETRY_BASE": "0.2",
         "POCKETRUN_WEBHOOK_POLL": "0.05"}  # fmt: skip
STRICT = {**ALLOW, "POCKETRUN_WEBHOOK_ALLOW_PRIVATE": "false"}


def _subscribe(client: httpx.Client, url: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, "events": ["run.finished"], **extra})
    assert response.status_code == 201, response.text
    return response.json()


def _run(client: httpx.Client, name: str = "w") -> dict[str, Any]:
    started = client.post("/v1/flows/hello/runs", json={"input": {"name": name}})
    assert started.status_code in (200, 201, 202), started.text
    return wait_for_run(client, started.json()["id"])


def _log(client: httpx.Client, hook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{hook_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_the_fourth_delivery_arrives_signed_and_the_log_shows_all_four(server_factory) -> None:
    server = server_factory(ALLOW)
    with Receiver([500, 500, 503, 200]) as receiver, server.client() as client:
        hook = _subscribe(client, receiver.url)
        assert hook["secret"].startswith("whsec_")
        assert "secret" not in client.get(f"/v1/webhooks/{hook['id']}").json()  # shown once
        run = _run(client)
        log = wait_until(lambda: len(_log(client, hook["id"])) >= 4 and _log(client, hook["id"]))
        assert [a["status_code"] for a in log] == [500, 500, 503, 200]
        assert all(a["delivery_status"] == "delivered" for a in log)
        assert len(receiver.requests) == 4
        last = receiver.requests[-1]
        assert verify(hook["secret"], last["headers"], last["body"])
        assert not verify("whsec_" + "A" * 32, last["headers"], last["body"])
        assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
        payload = json.loads(last["body"])
        assert payload["type"] == "run.finished"
        assert payload["data"]["id"] == run["id"] and payload["data"]["status"] == "succeeded"


def test_a_loopback_or_bad_url_is_a_422_without_the_allow_flag(server_factory) -> None:
    server = server_factory(STRICT)
    with server.client() as client:
        for url in ("http://127.0.0.1:9/hook", "http://localhost/x", "http://10.0.0.1/",
                    "http://169.254.169.254/", "ftp://example.com/", "not a url"):  # fmt: skip
            response = client.post("/v1/webhooks", json={"url": url, "events": ["run.finished"]})
            assert response.status_code == 422, (url, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "url" in response.text
        bad_event = client.post(
            "/v1/webhooks", json={"url": "https://example.com/", "events": ["run.exploded"]}
        )
        assert bad_event.status_code == 422 and "events" in bad_event.text
        assert client.get("/v1/webhooks").json()["items"] == []


def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    server_factory, db_url: str, tmp_path
) -> None:
    allowed = server_factory(ALLOW)
    with Receiver([200]) as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        with allowed.client() as client:
            hook = _subscribe(client, url)
        allowed.stop()
        strict = server_factory(STRICT)
        with strict.client() as client:
            _run(client)
            log = wait_until(lambda: _log(client, hook["id"]))
            assert log[0]["status_code"] is None and "refused" in log[0]["error"]
            assert "127.0.0.1" in log[0]["error"] or "::1" in log[0]["error"]
        assert receiver.requests == []


def test_redirects_are_not_followed(server_factory) -> None:
    server = server_factory(ALLOW)
    with Receiver([302, 302, 200]) as receiver, server.client() as client:
        hook = _subscribe(client, receiver.url)
        _run(client)
        log = wait_until(lambda: len(_log(client, hook["id"])) >= 3 and _log(client, hook["id"]))
        assert [a["status_code"] for a in log] == [302, 302, 200]
        assert [r["path"] for r in receiver.requests] == ["/hook"] * 3  # never /elsewhere


def test_a_hanging_receiver_does_not_slow_a_run(server_factory) -> None:
    server = server_factory({**ALLOW, "POCKETRUN_WEBHOOK_TIMEOUT": "120"})
    with Receiver([200], hang=60) as receiver, server.client() as client:
        _subscribe(client, receiver.url)
        _run(client, "first")
        wait_until(lambda: receiver.open == 1, message="the receiver to hang")
        second = _run(client, "second")  # finishes while the first delivery hangs
        assert second["status"] == "succeeded"
        assert receiver.open >= 1


def test_replay_sends_one_delivery_again(server_factory) -> None:
    server = server_factory(ALLOW)
    with Receiver([200]) as receiver, server.client() as client:
        hook = _subscribe(client, receiver.url)
        _run(client)
        first = wait_until(lambda: _log(client, hook["id"]))[0]
        replayed = client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/{first['delivery_id']}/replay"
        )
        assert replayed.status_code == 202, replayed.text
        log = wait_until(lambda: len(_log(client, hook["id"])) >= 2 and _log(client, hook["id"]))
        assert [a["delivery_id"] for a in log] == [first["delivery_id"]] * 2
        assert len(receiver.requests) == 2
        ids = {r["headers"]["webhook-id"] for r in receiver.requests}
        assert ids == {first["delivery_id"]}
        unknown = f"/v1/webhooks/{hook['id']}/deliveries/{hook['id']}/replay"
        assert client.post(unknown).status_code == 404


def test_a_tenant_never_sees_another_tenants_webhooks(server_factory, db_url: str) -> None:
    server = server_factory(ALLOW)
    keys = {
        (role, tenant): cli_key(db_url, role, tenant)
        for role, tenant in (("operator", "a"), ("operator", "b"), ("consumer", "a"))
    }

    def client(role: str, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers=bearer(keys[(role, tenant)]))

    with client("operator", "a") as a, client("operator", "b") as b, client("consumer", "a") as c:
        hook = _subscribe(a, "http://127.0.0.1:9/hook")
        assert a.get("/v1/webhooks").json()["items"][0]["id"] == hook["id"]
        assert b.get("/v1/webhooks").json()["items"] == []
        for method, path in (
            ("GET", f"/v1/webhooks/{hook['id']}"),
            ("DELETE", f"/v1/webhooks/{hook['id']}"),
            ("GET", f"/v1/webhooks/{hook['id']}/deliveries"),
            ("PATCH", f"/v1/webhooks/{hook['id']}"),
        ):
            kwargs = {"json": {"enabled": False}} if method == "PATCH" else {}
            assert b.request(method, path, **kwargs).status_code == 404, (method, path)
        assert c.get("/v1/webhooks").status_code == 403
        assert c.post("/v1/webhooks", json={"url": "http://x/", "events": []}).status_code == 403
        disabled = a.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False})
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        assert a.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
        assert a.get(f"/v1/webhooks/{hook['id']}").status_code == 404


def test_a_due_delivery_survives_a_restart(server_factory) -> None:
    env = {**ALLOW, "POCKETRUN_WEBHOOK_RETRY_BASE": "3"}
    first = server_factory(env)
    with Receiver([500, 200]) as receiver:
        with first.client() as client:
            hook = _subscribe(client, receiver.url)
            _run(client)
            wait_until(lambda: _log(client, hook["id"]), message="the first attempt's log")
        first.kill()  # the retry was due in ~3 s: only the database remembers it
        second: Server = server_factory(env)
        with second.client() as client:
            log = wait_until(
                lambda: len(_log(client, hook["id"])) >= 2 and _log(client, hook["id"])
            )
            assert [a["status_code"] for a in log] == [500, 200]
        assert len(receiver.requests) == 2


def test_the_cli_creates_lists_shows_deliveries_replays_and_deletes(server_factory, db_url) -> None:
    server = server_factory(ALLOW)
    env = {"POCKETRUN_WEBHOOK_ALLOW_PRIVATE": "false"}
    refused = pocketrun(
        db_url, "webhooks", "create", "http://127.0.0.1:9/", "--event", "run.finished", env=env
    )
    assert refused.returncode == 2 and "url" in refused.stdout + refused.stderr
    with Receiver([200]) as receiver, server.client() as client:
        made = pocketrun(
            db_url, "webhooks", "create", receiver.url, "--event", "run.finished", env=ALLOW
        )
        assert made.returncode == 0, made.stderr
        hook_id = made.stdout.split()[0]
        assert "whsec_" in made.stdout
        assert hook_id in pocketrun(db_url, "webhooks", "list").stdout
        _run(client)
        wait_until(lambda: _log(client, hook_id))
        log = pocketrun(db_url, "webhooks", "deliveries", hook_id)
        assert log.returncode == 0 and " 200 " in log.stdout, log.stdout
        delivery_id = log.stdout.split()[1]
        assert pocketrun(db_url, "webhooks", "replay", hook_id, delivery_id).returncode == 0
        wait_until(lambda: len(receiver.requests) == 2, message="the replayed delivery")
        assert pocketrun(db_url, "webhooks", "delete", hook_id).returncode == 0
        assert pocketrun(db_url, "webhooks", "list").stdout.strip() == ""


# --- PostgreSQL with Celery workers: the worker records the outbox rows and sends them ---

pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker


def test_celery_workers_record_and_send_deliveries(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    start_worker("hook-w", concurrency=2, env=ALLOW).wait_ready()
    # the API server's own sender sleeps for an hour: only the worker can send
    api_env = {**cs.worker_env(pg, redis_server.url), **ALLOW, "POCKETRUN_WEBHOOK_POLL": "3600"}
    server = Server(pg, env=api_env, log_path=tmp_path / "server.log").start()
    try:
        with Receiver([500, 200]) as receiver, server.client() as client:
            hook = _subscribe(client, receiver.url)
            run = _run(client)
            log = wait_until(
                lambda: len(_log(client, hook["id"])) >= 2 and _log(client, hook["id"])
            )
            assert [a["status_code"] for a in log] == [500, 200]
            assert verify(
                hook["secret"], receiver.requests[-1]["headers"], receiver.requests[-1]["body"]
            )
            assert json.loads(receiver.requests[-1]["body"])["data"]["id"] == run["id"]
    finally:
        server.kill()
