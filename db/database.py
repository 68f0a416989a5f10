"""The async database handle: one for PostgreSQL, a reader/writer pair for SQLite.

SQLite allows one writer at a time, so writers share one connection that opens its
transactions with ``BEGIN IMMEDIATE`` (no lock upgrade deadlocks, no busy loops inside
one process) while readers use their own pooled connections under WAL, in autocommit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
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
        self._point_path: str | None = None  # SQLite file for point_reader()
        self._point: sqlite3.Connection | None = None
        self._inserter: GroupInserter | None = None
        self._gate: WriteGate | None = None  # SQLite: the order writers take the writer in
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
            self._gate = WriteGate()
            parsed = make_url(self.url)
            path = parsed.database
            if path and path != ":memory:" and not parsed.query.get("uri"):
                self._point_path = path
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
            self._autocommit_writer = engine.execution_options(isolation_level="AUTOCOMMIT")
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

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on exit, rolled back on error."""
        async with self._write(urgent=False) as conn:
            yield conn

    @asynccontextmanager
    async def _write(self, *, urgent: bool) -> AsyncIterator[AsyncConnection]:
        if self._gate is None:  # PostgreSQL: writers run side by side
            async with self.writer.begin() as conn:
                yield conn
            return
        # SQLite's one writer connection, taken in turn through the gate; an ``urgent``
        # writer (a group of API inserts, see ``GroupInserter``) goes before queued ones.
        await self._gate.acquire(urgent)
        try:
            async with self.writer.begin() as conn:
                yield conn
        finally:
            self._gate.release()

    @asynccontextmanager
    async def write_statement(self) -> AsyncIterator[AsyncConnection]:
        """For exactly one data-modifying statement, atomic on its own: on PostgreSQL it runs
        in autocommit (no BEGIN and COMMIT round trips); on SQLite it is ``write()``."""
        if self._gate is not None:
            async with self.write() as conn:
                yield conn
            return
        async with self._autocommit_writer.connect() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reader.connect() as conn:
            yield conn

    async def insert_rows(self, *rows: tuple[Table, dict[str, Any]]) -> None:
        """INSERT ``rows`` (table, values) atomically, in a write transaction shared with the
        rows other callers insert at the same moment (group commit: see ``GroupInserter``).
        Returns once committed; raises what inserting them alone would raise."""
        loop = asyncio.get_running_loop()
        if self._inserter is None or self._inserter.loop is not loop:
            if self._inserter is not None:
                self._inserter.close()
            self._inserter = GroupInserter(self, loop)
        await self._inserter.insert(rows)

    def point_reader(self) -> sqlite3.Connection | None:
        """SQLite file databases only (else None): a stdlib connection for single-row
        SELECTs by key, run straight on the event loop instead of through an aiosqlite
        thread hop (~10 us instead of ~500 us under load). Autocommit and ``query_only``;
        under WAL a reader never waits for the writer, and ``busy_timeout`` is 0 so it can
        never block the loop: on ``sqlite3.Error`` a caller falls back to ``read()``.
        Callers must keep to cheap, indexed, single-row queries."""
        if self._point is None and self._point_path is not None:
            conn = sqlite3.connect(self._point_path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout=0")
                conn.execute("PRAGMA query_only=1")
            except sqlite3.Error:
                conn.close()
                raise
            self._point = conn
        return self._point

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        if self._point is not None:
            self._point.close()
            self._point = None
        if self._inserter is not None:
            self._inserter.close()
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


class GroupInserter:
    """Group commit for small INSERTs from concurrent callers (a run and its idempotency
    key, an audit entry): whatever is queued while the previous write ran goes into ONE
    write transaction with one ``executemany`` per table, instead of a transaction each.
    Each caller's rows stay atomic: when a group fails (say one caller's key already
    exists), every caller's rows are retried in a transaction of their own, so each gets
    the result it would have had alone."""

    MAX_GROUP = 256

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop) -> None:
        self.db = db
        self.loop = loop
        self._pending: list[tuple[tuple[tuple[Table, dict[str, Any]], ...], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._direct: _DirectInserts | None = None

    async def insert(self, rows: tuple[tuple[Table, dict[str, Any]], ...]) -> None:
        future = self.loop.create_future()
        self._pending.append((rows, future))
        if self._flusher is None:
            self._flusher = self.loop.create_task(self._flush_all())
        await future

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self.MAX_GROUP]
                del self._pending[: self.MAX_GROUP]
                await self._flush(group)
        finally:
            self._flusher = None

    async def _flush(self, group: list) -> None:
        try:
            try:
                await self._transaction([row for rows, _ in group for row in rows])
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0][1], exc)
                    return
                for rows, future in group:  # alone, so one caller's error is only its own
                    if future.done():
                        continue
                    try:
                        await self._transaction(list(rows))
                    except Exception as alone:
                        _settle(future, alone)
                    else:
                        _settle(future, None)
                return
            for _, future in group:
                _settle(future, None)
        except BaseException as exc:  # cancelled (shutdown): never leave a caller waiting
            for _, future in group:
                if not future.done():
                    future.cancel()
            raise exc

    async def _transaction(self, rows: list[tuple[Table, dict[str, Any]]]) -> None:
        by_shape: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
        for table, values in rows:
            by_shape.setdefault((table, tuple(values)), []).append(values)
        direct = self._direct_batches(by_shape)
        if direct is None:
            async with self.db._write(urgent=True) as conn:
                await self._execute(conn, by_shape)
            return
        gate = self.db._gate
        assert gate is not None and self._direct is not None
        await gate.acquire(True)
        try:
            await self.loop.run_in_executor(self._direct.thread, self._direct.run, direct)
        finally:
            gate.release()

    @staticmethod
    async def _execute(
        conn: AsyncConnection, by_shape: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]]
    ) -> None:
        for (table, _), values_list in by_shape.items():
            if len(values_list) == 1:
                await conn.execute(insert(table).values(values_list[0]))
            else:
                await conn.execute(insert(table), values_list)

    def _direct_batches(
        self, by_shape: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]]
    ) -> list[tuple[str, list[tuple[Any, ...]]]] | None:
        """On a SQLite file: the group as (SQL, parameter rows), bound as SQLAlchemy binds
        them, for ``_DirectInserts.run``; None to take the SQLAlchemy path."""
        if self._direct is None:
            if self.db._point_path is None or self.db._gate is None:
                return None
            self._direct = _DirectInserts(self.db._point_path, self.db.writer.dialect)
        batches = []
        for (table, keys), values_list in by_shape.items():
            plan = self._direct.plan(table, keys)
            if plan is None:
                return None
            sql, binds = plan
            batches.append(
                (
                    sql,
                    [
                        tuple(
                            values[name] if bind is None else bind(values[name])
                            for name, bind in binds
                        )
                        for values in values_list
                    ],
                )
            )
        return batches

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None


class _DirectInserts:
    """A group commit on a SQLite file as ONE hop to one thread (BEGIN IMMEDIATE, an
    ``executemany`` per table, COMMIT on a stdlib connection of its own) instead of a
    dozen aiosqlite hops through SQLAlchemy, each a GIL hand-off with the busy event loop.
    Writers still take turns through ``WriteGate``; the statements and bound values are
    SQLAlchemy's own (compiled once per table and set of columns, bound through the
    columns' bind processors), and driver errors are raised as SQLAlchemy's
    (``IntegrityError`` and the rest), so callers see what the SQLAlchemy path raises."""

    def __init__(self, path: str, dialect: Any) -> None:
        self.path = path
        self.dialect = dialect
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="pocketrun-inserts")
        self._conn: sqlite3.Connection | None = None
        self._plans: dict[tuple[Table, tuple[str, ...]], Any] = {}

    def plan(self, table: Table, keys: tuple[str, ...]) -> tuple[str, list[Any]] | None:
        """(SQL, [(key, bind processor or None)]) for inserting ``keys`` into ``table``;
        None when SQLAlchemy would add values of its own (Python-side column defaults)."""
        found = self._plans.get((table, keys), False)
        if found is not False:
            return found
        compiled = insert(table).compile(dialect=self.dialect, column_keys=list(keys))
        names = list(compiled.positiontup or ())
        plan = None
        if not compiled.insert_prefetch and sorted(names) == sorted(keys):
            processors = compiled._bind_processors
            plan = (str(compiled), [(name, processors.get(name)) for name in names])
        self._plans[(table, keys)] = plan
        return plan

    def run(self, batches: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """In ``self.thread``: the group's one transaction."""
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            _sqlite_pragmas(conn, None)
            self._conn = conn
        conn = self._conn
        sql, params = "BEGIN IMMEDIATE", ()
        try:
            conn.execute(sql)
            try:
                for sql, rows in batches:
                    params = rows
                    if len(rows) == 1:
                        conn.execute(sql, rows[0])
                    else:
                        conn.executemany(sql, rows)
                sql, params = "COMMIT", ()
                conn.execute(sql)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self.thread.submit(conn.close)
        self.thread.shutdown(wait=True)


def _settle(future: asyncio.Future, exc: BaseException | None) -> None:
    if future.done():  # its caller went away (cancelled)
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


class WriteGate:
    """Who takes SQLite's single writer connection next: FIFO, except that ``urgent``
    waiters (group commits of API inserts: a few small rows that a caller is waiting on)
    go first. Group commits come one at a time, so background writers (the engine's
    checkpoints) still get at least every other turn."""

    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future] = deque()
        self._normal: deque[asyncio.Future] = deque()

    async def acquire(self, urgent: bool) -> None:
        if not self._busy:
            self._busy = True
            return
        future = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
        queue.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # handed the writer just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(future)
            raise

    def release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the writer passes straight to it
                    return
        self._busy = False
