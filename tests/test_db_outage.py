"""While the database is away every authenticated call is 503 problem+json with
``Retry-After`` (never 500), and once it is back the same calls succeed again."""

from __future__ import annotations

import sqlite3

import asyncpg
import httpx
import pytest
from sqlalchemy import exc as sa

from core.outage import is_database_outage
from tests.private_postgres import PrivatePostgres
from tests.support import Server, wait_until

PROBLEM = "application/problem+json"
HELLO = {"input": {"name": "db"}}


def _calls(run_id: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/v1/runs", None),
        ("GET", f"/v1/runs/{run_id}", None),
        ("GET", f"/v1/runs/{run_id}/steps", None),
        ("POST", f"/v1/runs/{run_id}/cancel", None),
        ("POST", "/v1/flows/hello/runs", HELLO),
        ("GET", "/v1/flows", None),
        ("GET", "/v1/keys", None),
        ("GET", "/v1/audit", None),
    ]


@pytest.fixture
def private_pg():
    pg = PrivatePostgres().init()
    try:
        yield pg.start()
    finally:
        pg.remove()


@pytest.mark.timeout(120)
def test_a_database_outage_is_503_with_retry_after_then_recovers(private_pg, tmp_path) -> None:
    # AUTH_CACHE_TTL=0: every call authenticates against the database, as a new key would.
    server = Server(
        private_pg.url,
        env={"POCKETRUN_AUTH_CACHE_TTL": "0"},
        log_path=tmp_path / "server.log",
    ).start()
    try:
        with server.client() as client:
            run = client.post("/v1/flows/hello/runs?wait=10", json=HELLO)
            assert run.status_code == 201, run.text
            run_id = run.json()["id"]

            private_pg.stop()
            for method, path, body in _calls(run_id):
                response = client.request(method, path, json=body)
                assert response.status_code == 503, (method, path, response.text)
                assert response.headers["content-type"].startswith(PROBLEM)
                assert int(response.headers["retry-after"]) > 0
                problem = response.json()
                assert problem["status"] == 503 and problem["type"].endswith("/unavailable")
            assert client.get("/readyz").status_code == 503

            private_pg.start()

            def recovered() -> bool:
                try:
                    return client.get("/v1/runs").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(recovered, 30, 0.2, "the API to serve again once the database is back")
            for method, path, body in _calls(run_id):
                response = client.request(method, path, json=body)
                assert response.status_code < 400 or response.status_code == 409, (
                    method,
                    path,
                    response.text,
                )
            assert client.get("/readyz").status_code == 200
        assert "unhandled error" not in (tmp_path / "server.log").read_text()
    finally:
        server.kill()


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        sqlite3.OperationalError("database is locked"),
        sa.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")),
        sa.InterfaceError("SELECT 1", {}, Exception("x"), connection_invalidated=True),
    ],
    ids=lambda e: type(e).__name__,
)
def test_outage_errors_are_recognised(error: BaseException) -> None:
    assert is_database_outage(error)
    wrapped = RuntimeError("while reading")
    wrapped.__cause__ = error
    assert is_database_outage(wrapped)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.CharacterNotInRepertoireError("invalid byte sequence"),
        sqlite3.OperationalError("no such table: runs"),
        sa.IntegrityError("INSERT", {}, Exception("duplicate")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_are_not_outages(error: BaseException) -> None:
    assert not is_database_outage(error)
