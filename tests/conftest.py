"""Fixtures: every database test runs on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from db.migrate import upgrade
from db.store import RunStore, open_store
from tests.support import TEST_AUTH, Server

PG_ADMIN = os.environ.get("POCKETRUN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
DIALECTS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A private PostgreSQL database for this test session, dropped at the end."""
    name = f"pocketrun_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate(url: str) -> None:
    db = open_store(url)
    try:
        await upgrade(db)
    finally:
        await db.close()


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a SQLite file, or the session's PostgreSQL truncated."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'pocketrun.db'}"
        asyncio.run(_migrate(url))
        return url
    url = request.getfixturevalue("pg_url")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[RunStore]:
    """The run store on the test's database."""
    store = open_store(db_url)
    yield store
    await store.close()


@pytest.fixture
def api_headers() -> dict[str, str]:
    """Credentials every /v1 call in the suite carries: the seeded admin key."""
    return dict(TEST_AUTH)


@pytest.fixture
def server_factory(db_url: str, tmp_path: Path, api_headers: dict[str, str]):
    """Start real ``pocketrun serve`` processes on the test's database; all stopped after."""
    started: list[Server] = []

    def start(env: dict[str, str] | None = None) -> Server:
        server = Server(db_url, env=env, log_path=tmp_path / f"server{len(started)}.log")
        server.headers = dict(api_headers)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory()
