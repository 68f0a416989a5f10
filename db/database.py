"""The SQLAlchemy handle the stores' cold paths, migrations, keys and the audit log use.

SQLite allows one writer at a time, so SQLAlchemy's writers share one connection that opens
its transactions with ``BEGIN IMMEDIATE`` (no lock upgrade deadlocks) while readers use
their own pooled connections under WAL, in autocommit. The hot paths bypass this handle:
see ``db.sqlite_store`` and ``db.postgres_store``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
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
            # No pool_pre_ping: with asyncpg it costs three round trips (BEGIN, ping,
            # ROLLBACK) on every checkout, as much as the statements of a checkpoint.
            # Connections idle for a while are pinged instead (_ping_idle).
            engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=3600,
                **common,
            )
            _ping_idle(engine)
            self.writer = engine
            # Under READ COMMITTED every statement reads its own snapshot, in a transaction
            # or not: reads skip the BEGIN and ROLLBACK round trips (as on SQLite).
            self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    @staticmethod
    def _setup_sqlite(engine: AsyncEngine, begin: str | None) -> None:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if begin is None:
            return

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

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


PING_AFTER_IDLE = 2.0  # seconds a pooled PostgreSQL connection may rest unpinged


def _ping_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection on checkout only when it rested over PING_AFTER_IDLE: a
    dead one (the server restarted) is replaced before use, as pool_pre_ping would do,
    while connections in steady use go without the round trips. A server that restarts
    under a busy connection fails that connection's next statement (the pool then
    replaces every older connection); the engine treats that as any database error: the
    step did not commit, the run is requeued."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["pocketrun_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("pocketrun_idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"stale pooled connection: {exc!r}") from exc
