"""The app factory: tests, the CLI and uvicorn each build their own app."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from api import hardening, problems, tracing
from api.admission import Admission
from api.cluster import end_with_supervisor
from api.draining import Drain
from api.middleware import RequestMiddleware
from api.routes import (
    cache,
    catalog,
    control,
    events,
    flows,
    health,
    runs,
    schedules,
    session,
    tenants,
    webhooks,
    workers,
)
from api.security import start_security
from api.state import AppState
from api.ui import routes as ui
from core.logging import configure_logging
from core.settings import Settings, get_settings
from core.tracing import configure_tracing
from db.migrate import upgrade
from db.store import open_store
from flows.registry import load_flows, loaded_flows
from workers.declared import DeclaredFlows
from workers.executor import hand_over_to
from workers.factory import make_executor
from workers.scheduler import Scheduler
from workers.webhooks import WebhookSender

log = structlog.get_logger("pocketrun.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_tracing("api")  # once per process; a no-op unless OTEL_* asks for spans

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, json=settings.log_json, access=settings.log_access)
        registry = load_flows(settings.flow_modules, examples=settings.examples)
        store = open_store(settings.database_url)
        if settings.auto_migrate:
            await upgrade(store)
        await store.sync_flows(loaded_flows(registry))
        executor = make_executor(settings, store, registry)
        state = AppState(settings, store, registry, executor, Admission(store, settings))
        app.state.pocketrun = state
        app.state.security = await start_security(settings, store)
        # flows posted to POST /v1/flows, by this process or any other
        app.state.declared_flows = declared = DeclaredFlows(store, registry)
        try:
            await declared.refresh()
        except Exception as exc:  # e.g. AUTO_MIGRATE=false on an old schema: retried later
            log.warning("loading declared flows failed", error=repr(exc))

        async def drain_executor() -> None:
            state.draining.set()
            await executor.changes.close()  # wakes every long poll: each answers at once
            await executor.stop()

        drain = Drain(drain_executor, settings.drain_grace)
        await executor.start()
        state.spawn(declared.poll(settings.sweep_interval))
        state.spawn(WebhookSender(store, settings).run())  # --- webhooks: this process sends
        if settings.scheduler:  # --- schedules: this process fires due ticks too
            state.scheduler = Scheduler(store, registry, settings, hand_over_to(executor))
            state.spawn(state.scheduler.run())
        # Everything built at start lives as long as the process: keep the collector from
        # walking it again on every collection.
        gc.freeze()
        log.info("pocketrun ready", executor=executor.name, flows=len(registry.all()))
        with drain.on_signals():
            end_with_supervisor()
            try:
                yield
            finally:
                await drain.finish()
                for task in list(state.tasks):
                    task.cancel()
                await store.close()

    app = FastAPI(
        title="pocketrun",
        version="1",
        description="A durable backend for PocketFlow workflows.",
        lifespan=lifespan,
        docs_url=None,  # served by api.ui from vendored files: /docs works offline
        redoc_url=None,
    )
    problems.install(app)
    app.include_router(health.router)
    app.include_router(flows.router)
    app.include_router(catalog.router)
    app.include_router(runs.router)
    app.include_router(control.router)
    app.include_router(events.router)
    app.include_router(tenants.router)
    app.include_router(cache.router)
    app.include_router(webhooks.router)
    app.include_router(schedules.router)
    app.include_router(session.router)
    app.include_router(workers.router)
    ui.install(app)
    hardening.install(app, settings)  # keys and audit routes, security middleware, CORS
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes)
    tracing.install(app)
    return app
