"""Schema migrations with Alembic, driven from code (no alembic.ini needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from db.store import RunStore

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: Any | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(store: RunStore, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe when several processes start at once."""
    await _migrate(store, command.upgrade, revision)


async def downgrade(store: RunStore, revision: str = "-1") -> None:
    """Take the schema back to ``revision``: ``-1`` is one step down, ``base`` no schema."""
    await _migrate(store, command.downgrade, revision)


async def _migrate(store: RunStore, step: Callable[[Config, str], None], revision: str) -> None:
    """One transaction, serialized with every other migration, so concurrent callers queue."""
    async with store.sa.write() as conn:
        await store.serialize(conn, "pocketrun-migrate")
        await conn.run_sync(lambda sync_conn: step(_config(sync_conn), revision))


async def current_revision(store: RunStore) -> str | None:
    async with store.sa.read() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )
