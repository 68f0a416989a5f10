"""Rate limits per principal (per client IP before authentication), with ``limits``.

``POCKETRUN_RATE_LIMIT`` in the ``limits`` notation (``100/second``, or several separated
by ``;``). In-memory per process without ``POCKETRUN_REDIS_URL``; with it, the counters
live in Redis and every API process shares one budget. Fixed windows that start at the
first hit: within one window the total allowed across all processes is the limit.
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from core.errors import RateLimited

log = structlog.get_logger("pocketrun.ratelimit")

Headers = list[tuple[bytes, bytes]]


class RateLimiter:
    def __init__(
        self, spec: str, redis_url: str | None = None, *, prefix: str = "pocketrun"
    ) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        if not self.items:
            raise ValueError(f"POCKETRUN_RATE_LIMIT {spec!r} names no limit")
        self.storage: Storage
        if redis_url:
            self.storage = storage_from_string(
                "async+" + redis_url, implementation="redispy", key_prefix=f"{prefix}:rl"
            )
        else:
            self.storage = MemoryStorage()
        self.strategy = FixedWindowRateLimiter(self.storage)
        self.backend = "redis" if redis_url else "memory"

    async def check(self, identity: str) -> None:
        """RateLimited when ``identity`` has used up a limit already; counts nothing."""
        try:
            for item in self.items:
                if not await self.strategy.test(item, identity):
                    stats = await self.strategy.get_window_stats(item, identity)
                    raise self._exceeded(item, stats.reset_time)
        except RateLimited:
            raise
        except Exception as exc:  # the limiter's store is down: fail open, loudly
            log.warning("rate limiter unavailable", error=type(exc).__name__)

    @staticmethod
    def _exceeded(item: RateLimitItem, reset_time: float) -> RateLimited:
        reset = max(1, math.ceil(reset_time - time.time()))
        exc = RateLimited(f"rate limit of {item} exceeded; retry in {reset} s", retry_after=reset)
        exc.headers = _headers(item, 0, reset_time) | {"Retry-After": str(reset)}  # type: ignore[attr-defined]
        return exc

    async def hit(self, identity: str) -> Headers:
        """Count one call; the RateLimit headers for it, or RateLimited with them."""
        tightest: tuple[int, float, RateLimitItem] | None = None
        try:
            for item in self.items:
                allowed = await self.strategy.hit(item, identity)
                stats = await self.strategy.get_window_stats(item, identity)
                if not allowed:
                    raise self._exceeded(item, stats.reset_time)
                if tightest is None or stats.remaining < tightest[0]:
                    tightest = (stats.remaining, stats.reset_time, item)
        except RateLimited:
            raise
        except Exception as exc:  # the limiter's store is down: fail open, loudly
            log.warning("rate limiter unavailable", error=type(exc).__name__)
            return []
        assert tightest is not None
        remaining, reset_time, item = tightest
        return [
            (k.lower().encode(), v.encode())
            for k, v in _headers(item, remaining, reset_time).items()
        ]


def _headers(item: RateLimitItem, remaining: int, reset_time: float) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(item.amount),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(max(0, math.ceil(reset_time - time.time()))),
    }
