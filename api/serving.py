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
import importlib.util
import math
import os
import sys
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import ChangeReload

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


# The files whose change restarts `pocketrun dev`: flow modules and declarative flows.
DEV_INCLUDES = ["*.py", "*.json", "*.yaml", "*.yml"]


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> None:
    _prepare(settings)
    config = _config(settings, host=host, port=port, workers=workers)
    if workers > 1:
        ProcessSupervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def dev(settings: Settings, *, host: str, port: int, watch: list[Path]) -> None:
    """Serve one process and replace it when a watched file changes.

    uvicorn's reloader stops the old process with SIGTERM, which drains (the steps in
    flight finish, their leases are released) before the new one starts and carries the
    runs on from their checkpoints."""
    _prepare(settings)
    config = _config(
        settings,
        host=host,
        port=port,
        reload=True,
        reload_dirs=[str(d) for d in watch],
        reload_includes=DEV_INCLUDES,
    )
    ChangeReload(config, target=uvicorn.Server(config).run, sockets=[config.bind_socket()]).run()


def flow_dirs(modules: list[str]) -> list[Path]:
    """The directories of the engineer's flow modules (module names or file paths), found
    without importing them; the working directory when there are none."""
    cwd = Path.cwd()
    found: list[Path] = []
    for module in modules:
        if module.endswith((".py", ".json", ".yaml", ".yml")) or os.sep in module:
            found.append((cwd / module).resolve().parent)
            continue
        top = module.split(".")[0]
        sys.path.insert(0, str(cwd))
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        finally:
            sys.path.remove(str(cwd))
        if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
            found.append(Path(spec.origin).resolve().parent)  # a package's is its own
    dirs = list(dict.fromkeys(found)) or [cwd]
    return [d for d in dirs if not _inside_site_packages(d)] or [cwd]


def _inside_site_packages(path: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.parts)


def _prepare(settings: Settings) -> None:
    configure_logging(settings.log_level, json=settings.log_json, access=settings.log_access)
    if settings.auto_migrate:
        asyncio.run(_migrate(settings.database_url))
        os.environ["POCKETRUN_AUTO_MIGRATE"] = "false"  # done: the processes skip it
        get_settings.cache_clear()


def _config(settings: Settings, *, host: str, port: int, **options: object) -> uvicorn.Config:
    return uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        log_config=stdlib_config(
            settings.log_level, json=settings.log_json, access=settings.log_access
        ),
        log_level=settings.log_level.lower(),
        access_log=settings.log_access,
        timeout_graceful_shutdown=math.ceil(settings.drain_grace) + GRACEFUL_MARGIN,
        **options,
    )


async def _migrate(database_url: str) -> None:
    store = open_store(database_url)
    try:
        await upgrade(store)
    finally:
        await store.close()
