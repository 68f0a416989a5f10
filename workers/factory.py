"""Pick the executor named by ``POCKETRUN_EXECUTOR``."""

from __future__ import annotations

from core.settings import Settings
from db.store import RunStore
from flows.registry import Registry
from workers.executor import Executor


def make_executor(settings: Settings, store: RunStore, registry: Registry) -> Executor:
    if settings.executor == "celery":
        from workers.celery_executor import CeleryExecutor  # imported only when chosen

        return CeleryExecutor(settings, store, registry)
    from workers.local import LocalExecutor

    return LocalExecutor(store, registry, settings)
