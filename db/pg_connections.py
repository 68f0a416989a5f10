"""The PostgreSQL store's connections for its hot paths: a stack, and nothing per use.

asyncpg's ``Pool`` arms timers and runs reset logic on every acquire and release, which
measured about 80 µs per statement here, a quarter of a checkpoint's round trip. The
store leaves no session state behind (no transactions open between calls, no LISTEN,
session locks or SET), so a connection can simply go back on the stack. One that broke
(the server restarted, or its call was cancelled mid-statement) is closed and replaced
on a later call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg


class Connections:
    def __init__(
        self,
        dsn: str,
        size: int,
        setup: Callable[[asyncpg.Connection], Awaitable[None]],
    ) -> None:
        self.dsn = dsn
        self.size = size
        self.setup = setup
        self._idle: list[asyncpg.Connection] = []
        self._open = 0
        self._waiting: deque[asyncio.Future] = deque()
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._acquire()
        try:
            yield conn
        except BaseException as exc:
            broken = isinstance(exc, asyncio.CancelledError) or not isinstance(
                exc, asyncpg.PostgresError
            )
            self._release(conn, broken=broken or conn.is_closed())
            raise
        self._release(conn, broken=conn.is_closed() or conn.is_in_transaction())

    async def _acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise RuntimeError("the store is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._open -= 1
        if self._open < self.size:
            self._open += 1
            try:
                conn = await asyncpg.connect(self.dsn)
                await self.setup(conn)
            except BaseException:
                self._open -= 1
                raise
            return conn
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(future.result(), broken=False)  # handed over as we left
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(future)
            raise

    def _release(self, conn: asyncpg.Connection, *, broken: bool) -> None:
        if broken or self._closed:
            self._open -= 1
            conn.terminate()
            self._wake_one_to_connect()
            return
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(conn)
                return
        self._idle.append(conn)

    def _wake_one_to_connect(self) -> None:
        """A connection slot came free and no connection goes with it: the first waiter
        opens its own."""
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.get_loop().create_task(self._connect_for(future))
                return

    async def _connect_for(self, future: asyncio.Future) -> None:
        self._open += 1
        try:
            conn = await asyncpg.connect(self.dsn)
            await self.setup(conn)
        except BaseException as exc:
            self._open -= 1
            if not future.done():
                future.set_exception(exc)
            return
        if future.done():
            self._release(conn, broken=False)
        else:
            future.set_result(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
        self._open -= len(idle)
