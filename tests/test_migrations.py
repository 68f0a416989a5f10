"""Alembic migrations go up and down on SQLite and PostgreSQL, from code and from the CLI.

Each test gets a database with no schema at all: a SQLite file, or a PostgreSQL database of
its own (the session's shared one stays at head for everyone else)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from db.database import Database
from db.migrate import MIGRATIONS, current_revision, downgrade, upgrade
from db.store import NewRun, open_store
from tests.conftest import DIALECTS, PG_ADMIN
from tests.support import BIN, ROOT

SCRIPTS = ScriptDirectory(str(MIGRATIONS))
HEAD = SCRIPTS.get_current_head()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=DIALECTS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
        return
    name = f"pocketrun_migrations_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.read() as conn:
            names = await conn.run_sync(lambda sync_conn: inspect(sync_conn).get_table_names())
        return set(names) - {"alembic_version"}
    finally:
        await db.close()


async def _revision(url: str) -> str | None:
    db = open_store(url)
    try:
        return await current_revision(db)
    finally:
        await db.close()


async def _migrate(url: str, step, revision: str) -> None:
    db = open_store(url)
    try:
        await step(db, revision)
    finally:
        await db.close()


async def _insert_run(url: str) -> None:
    store = open_store(url)
    try:
        new = NewRun(
            tenant="default",
            principal="test",
            flow="hello",
            flow_version="1",
            graph_hash="hash",
            mode="background",
            queue="default",
            priority=0,
            input={"name": "x"},
            metadata={},
        )
        row, created = await store.create(new)
        assert created
        found = await store.get(row["id"])
        assert found is not None and found["status"] == "queued"
    finally:
        await store.close()


async def test_upgrade_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    await _migrate(empty_url, upgrade, "head")
    assert await _revision(empty_url) == HEAD
    schema = await _tables(empty_url)
    assert {"runs", "steps", "flows"} <= schema

    await _migrate(empty_url, downgrade, "base")
    assert await _revision(empty_url) is None
    assert await _tables(empty_url) == set()

    await _migrate(empty_url, upgrade, "head")
    assert await _revision(empty_url) == HEAD
    assert await _tables(empty_url) == schema
    await _insert_run(empty_url)


async def test_downgrade_goes_one_step_by_default(empty_url: str) -> None:
    await _migrate(empty_url, upgrade, "head")
    db = open_store(empty_url)
    try:
        await downgrade(db)
        assert await current_revision(db) == SCRIPTS.get_revision(HEAD).down_revision
    finally:
        await db.close()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POCKETRUN_DATABASE_URL": url, "POCKETRUN_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [str(BIN / "pocketrun"), "db", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_db_downgrade_and_upgrade(empty_url: str) -> None:
    def ok(*args: str) -> str:
        done = _cli(empty_url, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert f"at revision {HEAD}" in ok("upgrade")
    one_down = SCRIPTS.get_revision(HEAD).down_revision
    assert f"at revision {one_down}" in ok("downgrade")  # -1 by default
    assert f"at revision {HEAD}" in ok("upgrade")
    assert "at revision base" in ok("downgrade", "base")
    assert asyncio.run(_tables(empty_url)) == set()
    assert f"at revision {HEAD}" in ok("upgrade")
    assert {"runs", "steps"} <= asyncio.run(_tables(empty_url))
    asyncio.run(_insert_run(empty_url))

    unknown = _cli(empty_url, "downgrade", "no-such-revision")
    assert unknown.returncode == 1
    assert "no-such-revision" in unknown.stderr and "Traceback" not in unknown.stderr
