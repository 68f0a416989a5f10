"""How ``pocketrun serve`` runs the API: one uvicorn process, or N behind uvicorn's supervisor.

With ``workers > 1``, uvicorn's supervisor (``api.cluster``) binds the port once and starts
N processes that accept on it; it replaces one that dies (it looks every half second), and
on SIGTERM it signals each and waits for all of them, each draining its own runs
(``api.draining``). The processes share nothing but the port and the store: the database
decides what runs, so a run in flight in a process that died is swept up by another once
its lease expires.

Here, what uvicorn leaves to us: the schema is migrated once, before any process starts
(N processes racing one SQLite file's migrations fail), and every process, the supervisor
included, logs JSON lines to stdout.
"""

from __future__ import annotations

import asyncio
import math
import os

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from api.cluster import ProcessSupervisor
from core.logging import configure_logging, stdlib_config
from core.settings import Settings, get_settings
from db.migrate import upgrade
from db.store import open_store

# Each process builds its own app from the environment.
APP = "api.app:create_app"
# uvicorn cancels requests still open this long past the drain grace; by then the drain has
# woken every long poll and handed back every run, so only a stuck client remains.
GRACEFUL_MARGIN = 2


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> None:
    configure_logging(settings.log_level, json=settings.log_json, access=settings.log_access)
    if settings.auto_migrate:
        asyncio.run(_migrate(settings.database_url))
        os.environ["POCKETRUN_AUTO_MIGRATE"] = "false"  # done: the processes skip it
        get_settings.cache_clear()
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=stdlib_config(
            settings.log_level, json=settings.log_json, access=settings.log_access
        ),
        log_level=settings.log_level.lower(),
        access_log=settings.log_access,
        timeout_graceful_shutdown=math.ceil(settings.drain_grace) + GRACEFUL_MARGIN,
    )
    if workers > 1:
        ProcessSupervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


async def _migrate(database_url: str) -> None:
    store = open_store(database_url)
    try:
        await upgrade(store)
    finally:
        await store.close()
