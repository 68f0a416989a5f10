"""Pick the executor named by ``POCKETRUN_EXECUTOR``."""

from __future__ import annotations

from core.settings import Settings
from db.database import Database
from flows.registry import Registry
from workers.executor import Executor


def make_executor(settings: Settings, db: Database, registry: Registry) -> Executor:
    if settings.executor == "celery":
        from workers.celery_executor import CeleryExecutor  # imported only when chosen

        return CeleryExecutor(settings, db, registry)
    from workers.local import LocalExecutor

    return LocalExecutor(db, registry, settings)
