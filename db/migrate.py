"""Schema migrations with Alembic, driven from code (no alembic.ini needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from db.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: Any | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe when several processes start at once."""
    await _migrate(db, command.upgrade, revision)


async def downgrade(db: Database, revision: str = "-1") -> None:
    """Take the schema back to ``revision``: ``-1`` is one step down, ``base`` no schema."""
    await _migrate(db, command.downgrade, revision)


async def _migrate(db: Database, step: Callable[[Config, str], None], revision: str) -> None:
    """One transaction; on PostgreSQL under an advisory lock, so concurrent callers queue."""
    async with db.write() as conn:
        if db.dialect == "postgresql":
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263318)")
        await conn.run_sync(lambda sync_conn: step(_config(sync_conn), revision))


async def current_revision(db: Database) -> str | None:
    async with db.read() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )
