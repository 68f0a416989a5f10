"""Node result caching: a node that opts in has its ``exec`` result reused for the same key.

A node opts in with ``cache_ttl`` (seconds) and may say what its key is with
``cache_key(prep_res)`` (a string, or None for "don't cache this call"); without one the
key is ``prep_res`` as canonical JSON. Entries are per tenant, flow and node id: in Redis
when the deployment has it (the Celery shape), in the run store otherwise. A cache that
fails (Redis down, the database busy) is a miss: the node's ``exec`` runs, the step never
fails for it. Invalidation is by flow, or by flow and key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis import asyncio as aioredis

from core.metrics import NODE_CACHE
from core.settings import Settings
from db.store import RunStore

log = structlog.get_logger("pocketrun.node_cache")

REDIS_PREFIX = "pocketrun:cache"


def cache_ttl(node: Any) -> float | None:
    """The node's TTL when it opts in, else None."""
    ttl = getattr(node, "cache_ttl", None)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        return None
    return float(ttl)


def key_digest(key: str) -> str:
    """What a cache key is stored under (the API's invalidation by key uses it too)."""
    return hashlib.sha256(key.encode()).hexdigest()


def entry_key(node: Any, prep_res: Any) -> str | None:
    """The digest of the node's key for this call; None: this call is not cached."""
    custom = getattr(node, "cache_key", None)
    if callable(custom):
        key = custom(prep_res)
        return None if key is None else key_digest(str(key))
    try:
        return key_digest(orjson.dumps(prep_res, option=orjson.OPT_SORT_KEYS).decode())
    except TypeError:
        return None  # not JSON: nothing stable to key it by


def json_storable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


@dataclass(slots=True)
class NodeCache:
    """Where entries live: ``redis`` when given, else the run store."""

    redis: aioredis.Redis | None = None

    def scope(self, store: RunStore, tenant: str, flow: str) -> CacheScope:
        return CacheScope(self, store, tenant, flow)

    def _redis_key(self, tenant: str, flow: str, node: str, digest: str) -> str:
        return f"{REDIS_PREFIX}:{tenant}:{flow}:{node}:{digest}"

    def _index(self, tenant: str, flow: str) -> str:
        return f"{REDIS_PREFIX}-index:{tenant}:{flow}"

    async def get(
        self, store: RunStore, tenant: str, flow: str, node: str, digest: str
    ) -> tuple[bool, Any]:
        try:
            if self.redis is None:
                found = await store.cache_get(tenant, flow, node, digest)
            else:
                raw = await self.redis.get(self._redis_key(tenant, flow, node, digest))
                found = (True, orjson.loads(raw)["v"]) if raw is not None else (False, None)
        except Exception as exc:
            NODE_CACHE.labels("error").inc()
            log.warning("node cache unreachable; running exec", node=node, error=repr(exc))
            return False, None
        NODE_CACHE.labels("hit" if found[0] else "miss").inc()
        return found

    async def put(
        self,
        store: RunStore,
        tenant: str,
        flow: str,
        node: str,
        digest: str,
        value: Any,
        ttl: float,
    ) -> None:
        try:
            if self.redis is None:
                await store.cache_put(tenant, flow, node, digest, value, ttl)
                return
            key, index = self._redis_key(tenant, flow, node, digest), self._index(tenant, flow)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(key, orjson.dumps({"v": value}), px=max(1, int(ttl * 1000)))
                pipe.sadd(index, key)
                await pipe.execute()
        except Exception as exc:
            NODE_CACHE.labels("error").inc()
            log.warning("node cache unreachable; result not kept", node=node, error=repr(exc))

    async def clear(self, store: RunStore, tenant: str, flow: str, key: str | None = None) -> int:
        """Remove the flow's entries (only ``key``'s); how many went."""
        digest = key_digest(key) if key is not None else None
        removed = await store.cache_clear(tenant, flow, digest)
        if self.redis is not None:
            index = self._index(tenant, flow)
            members = [m.decode() for m in await self.redis.smembers(index)]
            if digest is not None:
                members = [m for m in members if m.endswith(":" + digest)]
            if members:
                removed += await self.redis.delete(*members)
                await self.redis.srem(index, *members)
        return removed


def node_cache(settings: Settings) -> NodeCache:
    """Redis when the deployment has it, with short timeouts: a dead cache is a miss."""
    url = settings.cache_redis_url or settings.redis_url
    if not url:
        return NodeCache()
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return NodeCache(client)


@dataclass(slots=True)
class CacheScope:
    """The cache as one run sees it: its tenant and flow."""

    cache: NodeCache
    store: RunStore
    tenant: str
    flow: str

    async def get(self, node: str, digest: str) -> tuple[bool, Any]:
        return await self.cache.get(self.store, self.tenant, self.flow, node, digest)

    async def put(self, node: str, digest: str, value: Any, ttl: float) -> None:
        await self.cache.put(self.store, self.tenant, self.flow, node, digest, value, ttl)
