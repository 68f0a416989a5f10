"""SQLite's one writer: a stdlib connection, group commit across callers, on the event loop.

A commit under WAL with ``synchronous=NORMAL`` costs tens of microseconds, less than one
hop to a thread and back, so writes run on the event loop itself. Whatever callers queue
during one turn of the loop commits as ONE transaction (group commit across runs); each
caller still gets only its own result or error. The connection's busy timeout is 0 on the
loop, so another process holding the write lock never blocks the loop: that batch then
waits for the lock on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

BUSY_TIMEOUT_MS = 30_000  # how long a batch waits for another process's write lock
MAX_BATCH = 512


def connect(path: str, *, query_only: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=0")
    if query_only:
        conn.execute("PRAGMA query_only=1")
    return conn


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


class SqliteWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Op, asyncio.Future]] = []
        self._scheduled = False
        self._off_loop = False  # a batch is waiting for the lock on the thread

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` inside a write transaction shared with this turn's other callers;
        return once it committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((op, future))
        if not self._scheduled and not self._off_loop:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        try:
            self._commit(batch)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                for _, future in batch:
                    _settle(future, exc=exc)
            else:
                self._off_loop = True
                asyncio.get_running_loop().create_task(self._commit_waiting(batch))
                return
        except Exception as exc:  # BEGIN itself failed: nothing was done
            for _, future in batch:
                _settle(future, exc=exc)
        if self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _commit_waiting(self, batch: list[tuple[Op, asyncio.Future]]) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="pocketrun-sqlite-writer")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._commit_blocking, batch)
        except BaseException as exc:  # settle every caller, whatever went wrong
            for _, future in batch:
                _settle(future, exc=exc)
        finally:
            self._off_loop = False
            if self._pending and not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush)

    def _commit_blocking(self, batch: list[tuple[Op, asyncio.Future]]) -> None:
        conn = self.conn
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            self._commit(batch, threadsafe=True)
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def _commit(self, batch: list[tuple[Op, asyncio.Future]], *, threadsafe: bool = False) -> None:
        """One transaction for the batch; on an op's error, each op alone, so one caller's
        error is only its own. Raises only a busy error from BEGIN (nothing was done)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        results: list[Any] = []
        try:
            for op, _ in batch:
                results.append(op(conn))
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(batch) == 1 or not isinstance(exc, Exception):
                for _, future in batch:
                    _settle(future, exc=exc, threadsafe=threadsafe)
                return
            for item in batch:
                self._commit_alone(item, threadsafe)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result, threadsafe=threadsafe)

    def _commit_alone(self, item: tuple[Op, asyncio.Future], threadsafe: bool) -> None:
        op, future = item
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = op(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            _settle(future, exc=exc, threadsafe=threadsafe)
        else:
            _settle(future, result=result, threadsafe=threadsafe)

    def close(self) -> None:
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _settle(
    future: asyncio.Future,
    *,
    result: Any = None,
    exc: BaseException | None = None,
    threadsafe: bool = False,
) -> None:
    def settle() -> None:
        if future.done():  # its caller went away (cancelled)
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    if threadsafe:
        future.get_loop().call_soon_threadsafe(settle)
    else:
        settle()
