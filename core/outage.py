"""Which errors mean "the database is out of reach", as opposed to a bug: one place for
every driver, so the API answers 503 with ``Retry-After`` (try again) instead of 500.

Errors arrive wrapped (SQLAlchemy wraps the driver's, which wraps the socket's), so the
whole chain of causes (``__cause__``, SQLAlchemy's ``orig``) is searched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa

# The server is down, restarting, refusing or out of connections.
_UNREACHABLE = (
    OSError,  # refused, reset, unreachable, timed out (TimeoutError is one)
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    sa.DisconnectionError,
    sa.TimeoutError,  # no pooled connection came free in time
)
# SQLite's: another writer held the lock past the busy timeout, or the file is gone.
_SQLITE_MESSAGES = ("database is locked", "database is busy", "unable to open database file")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        yield current
        # Causes only: an error raised while merely handling an outage is not one.
        for linked in (current.__cause__, getattr(current, "orig", None)):
            if isinstance(linked, BaseException):
                stack.append(linked)


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _UNREACHABLE):
        return True
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection is closed" in str(exc) or "connection was closed" in str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return any(text in str(exc) for text in _SQLITE_MESSAGES)
    return False


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything that caused it) says the database can't be reached."""
    return any(_is_outage(link) for link in _chain(exc))
