"""The PostgreSQL store's connection stack: bounded, shared fairly, self-healing."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from db.pg_connections import Connections
from db.postgres_store import _dsn, _setup


async def test_callers_beyond_the_size_wait_their_turn_and_all_finish(pg_url: str) -> None:
    conns = Connections(_dsn(pg_url), 2, _setup)

    async def query(i: int) -> int:
        async with conns.connection() as conn:
            return await conn.fetchval("SELECT $1::int FROM pg_sleep(0.01)", i)

    try:
        assert await asyncio.gather(*(query(i) for i in range(20))) == list(range(20))
        assert conns._open <= 2
    finally:
        await conns.close()


async def test_a_cancelled_waiter_leaks_no_connection(pg_url: str) -> None:
    conns = Connections(_dsn(pg_url), 1, _setup)
    try:
        async with conns.connection():
            waiter = asyncio.ensure_future(conns._acquire())
            await asyncio.sleep(0.01)
            waiter.cancel()
        async with conns.connection() as conn:  # the one connection is free again
            assert await conn.fetchval("SELECT 1") == 1
        assert conns._open == 1
    finally:
        await conns.close()


async def test_a_broken_connection_is_replaced(pg_url: str) -> None:
    conns = Connections(_dsn(pg_url), 1, _setup)
    admin = await asyncpg.connect(_dsn(pg_url))
    try:
        async with conns.connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with conns.connection() as again:
            assert again is conn  # reused while healthy
        await admin.execute("SELECT pg_terminate_backend($1)", pid)  # e.g. a server restart
        with contextlib.suppress(Exception):
            async with conns.connection() as conn:
                await conn.fetchval("SELECT 1")  # the broken one fails once
        async with conns.connection() as conn:  # then a fresh one, transparently
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
        assert conns._open == 1
    finally:
        await admin.close()
        await conns.close()
