"""Loading declared flows (``POST /v1/flows``) into a running process, without a restart.

Every API and worker process holds one ``DeclaredFlows`` per registry user: ``refresh``
costs one ``count(*)`` while nothing new was posted, and compiles and registers the rows
it has not loaded yet when something was. It runs before a run of an unknown flow is
started or claimed, and the API runs it periodically so listings stay current.
"""

from __future__ import annotations

import asyncio

import structlog

from core.errors import PocketrunError
from db.declared_flows import DeclaredFlowRepository
from db.store import RunStore
from flows.declarative import register_document
from flows.registry import FlowSpec, Registry

log = structlog.get_logger("pocketrun.declared")


class DeclaredFlows:
    def __init__(self, store: RunStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.repo = DeclaredFlowRepository(store)
        self._seen = -1  # the row count last loaded
        self._failed: set[tuple[str, str]] = set()  # logged once; retried on the next change
        self._lock = asyncio.Lock()

    async def refresh(self) -> list[FlowSpec]:
        """Register the declared flows this process lacks; the ones registered now."""
        async with self._lock:
            count = await self.repo.count()
            if count == self._seen:
                return []
            added: list[FlowSpec] = []
            for row in await self.repo.all():
                if self.registry.find(row["name"], row["version"]) is not None:
                    continue
                try:
                    added.append(
                        register_document(
                            row["document"], registry=self.registry, origin="POST /v1/flows"
                        )
                    )
                except PocketrunError as exc:
                    key = (row["name"], row["version"])
                    if key not in self._failed:
                        self._failed.add(key)
                        log.warning(
                            "declared flow not loaded",
                            flow=key[0],
                            version=key[1],
                            error=exc.detail,
                        )
            self._seen = count
            if added:
                await self.store.sync_flows(
                    [(s.name, s.version, s.graph_hash, s.description) for s in added]
                )
                log.info("declared flows loaded", flows=[f"{s.name}@{s.version}" for s in added])
            return added

    async def find(self, name: str, version: str) -> FlowSpec | None:
        """The loaded flow, loading declared ones first when it is not (yet) here."""
        spec = self.registry.find(name, version)
        if spec is None:
            await self.refresh()
            spec = self.registry.find(name, version)
        return spec

    async def knows(self, name: str) -> bool:
        if name not in self.registry:
            await self.refresh()
        return name in self.registry

    async def poll(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled; failures are logged."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("loading declared flows failed", error=repr(exc))
