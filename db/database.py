"""The async database handle: one for PostgreSQL, a reader/writer pair for SQLite.

SQLite allows one writer at a time, so writers share one connection that opens its
transactions with ``BEGIN IMMEDIATE`` (no lock upgrade deadlocks, no busy loops inside
one process) while readers use their own pooled connections under WAL, in autocommit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from core.jsonutil import dumps_str, loads
from core.settings import normalize_database_url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Driver-level autocommit, so SQLAlchemy's "begin" event issues our own BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_database_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        common: dict[str, Any] = {"json_serializer": dumps_str, "json_deserializer": loads}
        if self.dialect == "sqlite":
            # Readers run in autocommit: under WAL every statement reads one consistent
            # snapshot, and no read block issues more than one statement. A BEGIN and a
            # ROLLBACK per read cost more aiosqlite thread hops than the SELECT itself.
            self.reader = create_async_engine(
                self.url,
                poolclass=AsyncAdaptedQueuePool,
                pool_size=pool_size,
                isolation_level="AUTOCOMMIT",
                **common,
            )
            self.writer = create_async_engine(
                self.url,
                poolclass=AsyncAdaptedQueuePool,
                pool_size=1,
                max_overflow=0,
                pool_timeout=120,
                **common,
            )
            self._setup_sqlite(self.reader, None)
            self._setup_sqlite(self.writer, "BEGIN IMMEDIATE")
        else:
            engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                **common,
            )
            self.reader = self.writer = engine

    @staticmethod
    def _setup_sqlite(engine: AsyncEngine, begin: str | None) -> None:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if begin is None:
            return

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on exit, rolled back on error."""
        async with self.writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reader.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()
