"""Every route against every kind of caller, from a table.

The table is checked against ``create_app().routes``: a route added later that is not in
the table, or that declares no permission, fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from api.app import create_app
from api.authz import ROLE_PERMISSIONS, Permission, app_routes, route_permission
from core.principal import Role
from core.settings import Settings
from tests.security_support import api_key, bearer
from tests.support import TEST_AUTH, Server, wait_until

OK = "ok"  # 2xx, or 409: allowed, and the domain answered
DENIED = 403
UNAUTH = 401
CALLERS = ["consumer", "operator", "engineer", "admin", "none", "revoked", "expired", "garbage"]

# (method, path) -> (permission it must declare, {role: expected}); roles not named: OK.
TABLE: dict[tuple[str, str], tuple[Permission, dict[str, Any]]] = {
    ("GET", "/v1/flows"): (Permission.flow_read, {}),
    ("GET", "/v1/flows/{flow}"): (Permission.flow_read, {}),
    ("POST", "/v1/flows"): (Permission.flow_register, {"consumer": DENIED, "operator": DENIED}),
    ("GET", "/v1/nodes"): (Permission.flow_read, {}),
    ("POST", "/v1/flows/{flow}/runs"): (
        Permission.run_start,
        {"operator": DENIED, "engineer": DENIED},
    ),
    ("GET", "/v1/runs"): (Permission.run_read, {}),
    ("GET", "/v1/runs/{run_id}"): (Permission.run_read, {}),
    ("GET", "/v1/runs/{run_id}/steps"): (Permission.run_read, {}),
    ("GET", "/v1/runs/{run_id}/steps/{seq}"): (Permission.run_read, {}),
    ("GET", "/v1/runs/{run_id}/state"): (Permission.run_internals, {"consumer": DENIED}),
    ("GET", "/v1/runs/{run_id}/events"): (Permission.run_read, {}),
    ("POST", "/v1/runs/{run_id}/cancel"): (Permission.run_cancel, {}),
    ("POST", "/v1/runs/{run_id}/resume"): (Permission.run_resume, {}),
    ("POST", "/v1/runs/{run_id}/retry"): (Permission.run_retry, {"consumer": DENIED}),
    ("POST", "/v1/runs/{run_id}/replay"): (Permission.run_retry, {"consumer": DENIED}),
    ("POST", "/v1/runs/{run_id}/pause"): (Permission.run_control, {"consumer": DENIED}),
    ("POST", "/v1/runs/{run_id}/unpause"): (Permission.run_control, {"consumer": DENIED}),
    ("POST", "/v1/runs/{run_id}/migrate"): (Permission.run_control, {"consumer": DENIED}),
    ("POST", "/v1/keys"): (
        Permission.key_create,
        {"consumer": DENIED, "operator": DENIED, "engineer": DENIED},
    ),
    ("GET", "/v1/keys"): (
        Permission.key_read,
        {"consumer": DENIED, "operator": DENIED, "engineer": DENIED},
    ),
    ("DELETE", "/v1/keys/{key_id}"): (
        Permission.key_revoke,
        {"consumer": DENIED, "operator": DENIED, "engineer": DENIED},
    ),
    ("GET", "/v1/tenants/{tenant}/limits"): (Permission.tenant_read, {"consumer": DENIED}),
    ("PUT", "/v1/tenants/{tenant}/limits"): (
        Permission.tenant_limit,
        {"consumer": DENIED, "operator": DENIED, "engineer": DENIED},
    ),
    ("DELETE", "/v1/tenants/{tenant}/limits"): (
        Permission.tenant_limit,
        {"consumer": DENIED, "operator": DENIED, "engineer": DENIED},
    ),
    ("DELETE", "/v1/cache"): (Permission.cache_clear, {"consumer": DENIED}),
    # --- webhooks: the tenant's operators, engineers and admins ---
    ("POST", "/v1/webhooks"): (Permission.webhook_manage, {"consumer": DENIED}),
    ("GET", "/v1/webhooks"): (Permission.webhook_read, {"consumer": DENIED}),
    ("GET", "/v1/webhooks/{webhook_id}"): (Permission.webhook_read, {"consumer": DENIED}),
    ("PATCH", "/v1/webhooks/{webhook_id}"): (Permission.webhook_manage, {"consumer": DENIED}),
    ("DELETE", "/v1/webhooks/{webhook_id}"): (Permission.webhook_manage, {"consumer": DENIED}),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): (
        Permission.webhook_read,
        {"consumer": DENIED},
    ),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"): (
        Permission.webhook_manage,
        {"consumer": DENIED},
    ),
    # --- schedules: the tenant's operators, engineers and admins ---
    ("POST", "/v1/schedules"): (Permission.schedule_manage, {"consumer": DENIED}),
    ("GET", "/v1/schedules"): (Permission.schedule_read, {"consumer": DENIED}),
    ("GET", "/v1/schedules/{schedule_id}"): (Permission.schedule_read, {"consumer": DENIED}),
    ("PATCH", "/v1/schedules/{schedule_id}"): (Permission.schedule_manage, {"consumer": DENIED}),
    ("DELETE", "/v1/schedules/{schedule_id}"): (Permission.schedule_manage, {"consumer": DENIED}),
    ("GET", "/v1/me"): (Permission.session_read, {}),
    ("GET", "/v1/workers"): (Permission.worker_read, {"consumer": DENIED}),
    ("GET", "/v1/audit"): (
        Permission.audit_read,
        {"consumer": DENIED, "operator": DENIED, "engineer": DENIED},
    ),
}
OPEN = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/ui"),  # the dashboard's page: it signs in with a key like any client
}


def _app_routes() -> dict[tuple[str, str], Any]:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    found = {}
    for path, methods, route in app_routes(app):
        for method in sorted(methods):
            if method != "HEAD":
                found[(method, path)] = route
    return found


def test_the_table_covers_every_route_and_each_declares_its_permission() -> None:
    routes = _app_routes()
    secured = {k for k in routes if k[1].startswith("/v1")}
    assert secured == set(TABLE), (
        f"routes missing from the table: {sorted(secured - set(TABLE))}; "
        f"stale table rows: {sorted(set(TABLE) - secured)}"
    )
    assert set(routes) - secured == OPEN, "a route outside /v1 must be deliberately open"
    for key, (permission, expected) in TABLE.items():
        route = routes[key]
        assert isinstance(route, APIRoute)
        assert route_permission(route) is permission, key
        for role in Role:  # the table agrees with the one place that decides
            allowed = permission in ROLE_PERMISSIONS[role]
            assert (expected.get(role.value, OK) == OK) == allowed, (key, role)


@pytest.fixture
def server(server_factory) -> Server:
    """Webhooks to the loopback receiver the table's calls name are allowed here."""
    return server_factory({"POCKETRUN_WEBHOOK_ALLOW_PRIVATE": "true"})


def _webhook_and_delivery(server: Server) -> dict[str, str]:
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["run.finished"]}
    made = httpx.post(f"{server.url}/v1/webhooks", json=hook, headers=TEST_AUTH)
    assert made.status_code == 201, made.text
    run = httpx.post(
        f"{server.url}/v1/flows/hello/runs?wait=10",
        json={"input": {"name": "w"}},
        headers=TEST_AUTH,
    )
    assert run.status_code in (201, 202), run.text
    log = f"{server.url}/v1/webhooks/{made.json()['id']}/deliveries"
    attempts = wait_until(lambda: httpx.get(log, headers=TEST_AUTH).json()["items"])
    return {"webhook": made.json()["id"], "delivery": attempts[0]["delivery_id"]}


SCHEDULE = {"flow": "hello", "every": 3600, "input": {"name": "s"}}


def _schedule(server: Server) -> str:
    made = httpx.post(f"{server.url}/v1/schedules", json=SCHEDULE, headers=TEST_AUTH)
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _request(client: httpx.Client, key: tuple[str, str], ids: dict[str, str]) -> httpx.Response:
    method, path = key
    webhook, schedule = ids["webhook"], ids["schedule"]
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["run.finished"]}
    if key == ("DELETE", "/v1/webhooks/{webhook_id}"):  # each allowed caller deletes its own
        made = client.post("/v1/webhooks", json=hook)
        webhook = made.json()["id"] if made.status_code == 201 else webhook
    if key == ("DELETE", "/v1/schedules/{schedule_id}"):  # likewise
        made = client.post("/v1/schedules", json=SCHEDULE)
        schedule = made.json()["id"] if made.status_code == 201 else schedule
    url = path.format(
        flow="hello",
        run_id=ids["run"],
        key_id=ids["spare_key"],
        seq=1,
        webhook_id=webhook,
        schedule_id=schedule,
        delivery_id=ids["delivery"],
        tenant="default",
    )
    if key == ("DELETE", "/v1/cache"):
        url += "?flow=hello"
    body = None
    if key == ("POST", "/v1/webhooks"):
        body = hook
    elif key == ("PATCH", "/v1/webhooks/{webhook_id}"):
        body = {"enabled": True}
    elif key == ("POST", "/v1/schedules"):
        body = SCHEDULE
    elif key == ("PATCH", "/v1/schedules/{schedule_id}"):
        body = {"enabled": False}
    if key == ("POST", "/v1/flows/{flow}/runs"):
        body = {"input": {"name": "table"}}
    elif key == ("POST", "/v1/flows"):  # the engineer registers it, the admin gets a 200
        body = {
            "name": "table-decl",
            "start": "a",
            "nodes": {"a": {"type": "template", "params": {"set": {"x": 1}}}},
        }
    elif key == ("POST", "/v1/keys"):
        body = {"name": "made-by-table", "role": "consumer"}
    elif key == ("POST", "/v1/runs/{run_id}/resume"):
        body = {"payload": {}}  # allowed callers get past authorization: the run is not waiting
    elif key == ("POST", "/v1/runs/{run_id}/replay"):
        body = {"from_seq": 1}
    elif key == ("PUT", "/v1/tenants/{tenant}/limits"):
        body = {"concurrency": 100}
    elif key == ("POST", "/v1/runs/{run_id}/migrate"):
        body = {"version": "1"}  # allowed callers get past authorization: the run finished
    return client.request(method, url, json=body)


def test_every_route_against_every_caller(server: Server) -> None:
    headers: dict[str, dict[str, str]] = {"admin": TEST_AUTH, "none": {}}
    for role in ("consumer", "operator", "engineer"):
        headers[role] = bearer(api_key(server, role)[1])
    revoked_id, revoked = api_key(server, "admin")
    assert httpx.delete(f"{server.url}/v1/keys/{revoked_id}", headers=TEST_AUTH).status_code == 200
    headers["revoked"] = bearer(revoked)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    headers["expired"] = bearer(api_key(server, "admin", expires_at=past)[1])
    headers["garbage"] = bearer("prk_" + "x" * 43)

    # The run belongs to the consumer, so every role of the tenant may see it.
    with httpx.Client(base_url=server.url, headers=headers["consumer"], timeout=30) as client:
        created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "t"}})
        assert created.status_code in (201, 202), created.text
    ids = {"run": created.json()["id"], "spare_key": api_key(server, "consumer")[0]}
    ids.update(_webhook_and_delivery(server), schedule=_schedule(server))

    failures = []
    for key, (_, expected_by_role) in TABLE.items():
        for caller in CALLERS:
            if caller in ("none", "revoked", "expired", "garbage"):
                expected = UNAUTH
            else:
                expected = expected_by_role.get(caller, OK)
            with httpx.Client(base_url=server.url, headers=headers[caller], timeout=30) as client:
                response = _request(client, key, ids)
            status = response.status_code
            good = (200 <= status < 300 or status == 409) if expected == OK else status == expected
            if not good:
                failures.append(f"{key} as {caller}: {status} (expected {expected})")
            if status >= 400:
                assert response.headers["content-type"] == "application/problem+json"
            if status == UNAUTH:
                assert response.headers["www-authenticate"].startswith("Bearer")
    assert not failures, "\n".join(failures)

    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for method, path in OPEN:
            if path == "/docs/oauth2-redirect":
                continue
            assert anonymous.request(method, path).status_code == 200, path
        for header in (
            "Basic YWRtaW46YWRtaW4=",
            "Bearer",
            "prk_x",
            "",
            "Bearer a.b.c",
            "Bearer prk_",
        ):
            response = anonymous.get("/v1/flows", headers={"Authorization": header})
            assert response.status_code == 401, header
            assert response.json()["status"] == 401
