"""Helpers for the security tests: keys through the API and through the CLI."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import httpx

from tests.support import BIN, ROOT, TEST_AUTH, Server


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_key(
    server: Server,
    role: str,
    *,
    tenant: str | None = None,
    as_: dict[str, str] | None = None,
    **extra: Any,
) -> tuple[str, str]:
    """(id, key) of a new key made through ``POST /v1/keys`` (by the test admin by default)."""
    body: dict[str, Any] = {"name": f"{role}-{tenant or 'own'}", "role": role, **extra}
    if tenant is not None:
        body["tenant"] = tenant
    response = httpx.post(server.url + "/v1/keys", json=body, headers=as_ or TEST_AUTH, timeout=30)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["id"], created["key"]


def pocketrun(db_url: str, *args: str, env: dict[str, str] | None = None):
    full = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": db_url,
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "COLUMNS": "250",
        **(env or {}),
    }
    return subprocess.run(
        [str(BIN / "pocketrun"), *args],
        cwd=ROOT,
        env=full,
        timeout=120,
        capture_output=True,
        text=True,
    )


def cli_key(db_url: str, role: str, tenant: str, *extra: str) -> str:
    result = pocketrun(db_url, "keys", "create", "--role", role, "--tenant", tenant, *extra)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("prk_"), result.stdout
    return key
