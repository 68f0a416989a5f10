"""A circuit breaker for nodes that call other services.

Closed: calls go through; ``failure_threshold`` consecutive failures open it. Open: for
``reset_after`` seconds every call fails at once with ``core.errors.CircuitOpen`` (naming
the service and when it is tried again) and nothing is sent. Then half-open: exactly one
caller, across every worker sharing the Redis, gets a trial call; its success closes the
breaker, its failure opens it again for another ``reset_after``.

The state lives in Redis when a Redis URL is configured (``POCKETRUN_REDIS_URL``, or the
``redis_url`` argument), so every worker and process sees one breaker per service: hash
``pocketrun:breaker:{<service>}`` (fields ``failures`` and ``open_until``, epoch seconds)
and the trial lock ``pocketrun:breaker:{<service>}:trial`` (``SET NX`` by the script, with
an expiry so a trial whose worker died is handed out again). Each decision is one Lua
script, one round trip. Once a process has seen the breaker open it keeps that locally
until ``open_until`` (nothing can close it sooner), so an open breaker costs no I/O.
Without Redis, or while Redis is down, the same logic runs on in-process state: losing
Redis loses the sharing, never a call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from pocketflow import Node

from core.errors import CircuitOpen
from core.metrics import BREAKER_OPEN, BREAKER_REJECTED, BREAKER_TRANSITIONS
from core.settings import get_settings

log = structlog.get_logger("pocketrun.breaker")

CLOSED, OPEN, TRIAL, BUSY = 0, 1, 2, 3  # what ``before`` decides
REDIS_DOWN_FOR = 5.0  # after a Redis error, use in-process state this long
KEY_TTL_MS = 24 * 3600 * 1000

# KEYS[1] hash, KEYS[2] trial lock; ARGV now, trial lock ms. -> {decision, open_until}
BEFORE = """
local ou = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if ou == 0 then return {0, '0'} end
if tonumber(ARGV[1]) < ou then return {1, tostring(ou)} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return {2, tostring(ou)} end
return {3, tostring(ou)}
"""
# ARGV now, threshold, reset_after, was trial (0/1), key ttl ms -> open_until if it opened
FAILURE = """
local ou = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if ou > 0 and ARGV[4] == '0' then return '0' end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if ARGV[4] == '1' or failures >= tonumber(ARGV[2]) then
  local open_until = tostring(tonumber(ARGV[1]) + tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'open_until', open_until, 'failures', 0)
  redis.call('DEL', KEYS[2])
  return open_until
end
return '0'
"""
# ARGV was trial (0/1) -> 1 if it closed an open breaker
SUCCESS = """
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
if tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0') == 0 then
  redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class _Local:
    """One service's in-process state: the whole breaker without Redis, and the cache of
    the open state with it."""

    failures: int = 0
    open_until: float = 0.0
    trial_until: float = 0.0  # the trial lock's expiry
    seen_open: float = 0.0  # cached open_until (from either backend)
    lock: threading.Lock = field(default_factory=threading.Lock)


_LOCAL: dict[str, _Local] = {}
_LOCAL_LOCK = threading.Lock()
_CLIENTS: dict[str, redis.Redis] = {}
_REDIS_DOWN_UNTIL: dict[str, float] = {}


def _local(service: str) -> _Local:
    with _LOCAL_LOCK:
        return _LOCAL.setdefault(service, _Local())


def _client(url: str) -> redis.Redis:
    with _LOCAL_LOCK:
        client = _CLIENTS.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
            _CLIENTS[url] = client
        return client


def reset_local() -> None:
    """Forget every in-process breaker state (tests; a fresh process has none)."""
    with _LOCAL_LOCK:
        _LOCAL.clear()
        _REDIS_DOWN_UNTIL.clear()


class CircuitBreaker:
    """One service's breaker; cheap to make (the state is per service, not per object).

    Use ``with breaker.guard() as call:`` around one call (``call.failed()`` marks a
    result, e.g. a 5xx, as a failure without raising), or ``async with breaker.aguard()``
    in async nodes. Any exception out of the block counts as a failure."""

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        trial_timeout: float = 60.0,
        redis_url: str | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_after <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after > 0")
        self.service = service
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.trial_timeout = trial_timeout  # the trial lock's life if its caller never reports
        self.redis_url = redis_url if redis_url is not None else get_settings().redis_url
        self._state = _local(service)
        key = f"pocketrun:breaker:{{{service}}}"
        self._keys = [key, key + ":trial"]

    # --- one call ------------------------------------------------------------------

    def before(self) -> bool:
        """Raise CircuitOpen, or let the call go; True when it is the half-open trial."""
        now = time.time()
        state = self._state
        if state.seen_open > now:
            self._reject(state.seen_open, "it kept failing")
        decision, until = self._run("before", now)
        if decision == OPEN:
            state.seen_open = until
            self._reject(until, "it kept failing")
        if decision == BUSY:
            self._reject(now + 0.5, "a trial call is in flight")
        if decision == TRIAL:
            self._transition("half_open")
        return decision == TRIAL

    def success(self, trial: bool) -> None:
        if self._run("success", trial):
            self._state.seen_open = 0.0
            self._transition("closed")

    def failure(self, trial: bool) -> None:
        until = self._run("failure", time.time(), trial)
        if until:
            self._state.seen_open = until
            self._transition("open", until=until)

    @contextmanager
    def guard(self) -> Iterator[_Call]:
        call = _Call(self.before())
        try:
            yield call
        except BaseException:
            self.failure(call.trial)
            raise
        if call.bad:
            self.failure(call.trial)
        else:
            self.success(call.trial)

    @asynccontextmanager
    async def aguard(self) -> AsyncIterator[_Call]:
        import asyncio

        # the fast path (open, cached) does no I/O; the rest is one short Redis round trip
        call = _Call(await asyncio.to_thread(self.before))
        try:
            yield call
        except BaseException:
            await asyncio.to_thread(self.failure, call.trial)
            raise
        if call.bad:
            await asyncio.to_thread(self.failure, call.trial)
        else:
            await asyncio.to_thread(self.success, call.trial)

    # --- backends --------------------------------------------------------------------

    def _run(self, op: str, *args: Any) -> Any:
        url = self.redis_url
        if url and _REDIS_DOWN_UNTIL.get(url, 0.0) <= time.monotonic():
            try:
                return getattr(self, f"_redis_{op}")(_client(url), *args)
            except redis.RedisError as exc:
                _REDIS_DOWN_UNTIL[url] = time.monotonic() + REDIS_DOWN_FOR
                log.warning("breaker.redis_down", service=self.service, error=str(exc), local=True)
        with self._state.lock:
            return getattr(self, f"_local_{op}")(*args)

    def _redis_before(self, client: redis.Redis, now: float) -> tuple[int, float]:
        decision, until = client.eval(BEFORE, 2, *self._keys, repr(now), self._trial_ms())
        return int(decision), float(until)

    def _redis_failure(self, client: redis.Redis, now: float, trial: bool) -> float:
        args = (repr(now), self.failure_threshold, repr(self.reset_after), int(trial))
        return float(client.eval(FAILURE, 2, *self._keys, *args, KEY_TTL_MS))

    def _redis_success(self, client: redis.Redis, trial: bool) -> bool:
        return bool(client.eval(SUCCESS, 2, *self._keys, int(trial)))

    def _local_before(self, now: float) -> tuple[int, float]:
        s = self._state
        if not s.open_until:
            return CLOSED, 0.0
        if now < s.open_until:
            return OPEN, s.open_until
        if s.trial_until > time.monotonic():
            return BUSY, s.open_until
        s.trial_until = time.monotonic() + self.trial_timeout
        return TRIAL, s.open_until

    def _local_failure(self, now: float, trial: bool) -> float:
        s = self._state
        if s.open_until and not trial:
            return 0.0
        s.failures += 1
        if trial or s.failures >= self.failure_threshold:
            s.open_until, s.failures, s.trial_until = now + self.reset_after, 0, 0.0
            return s.open_until
        return 0.0

    def _local_success(self, trial: bool) -> bool:
        s = self._state
        if trial:
            s.open_until, s.failures, s.trial_until = 0.0, 0, 0.0
            return True
        if not s.open_until:
            s.failures = 0
        return False

    def _trial_ms(self) -> int:
        return int(self.trial_timeout * 1000)

    # --- reporting -------------------------------------------------------------------

    def _reject(self, retry_at: float, reason: str) -> None:
        BREAKER_REJECTED.labels(self.service).inc()
        raise CircuitOpen(self.service, retry_at, reason=reason)

    def _transition(self, state: str, **extra: Any) -> None:
        BREAKER_TRANSITIONS.labels(self.service, state).inc()
        BREAKER_OPEN.labels(self.service).set(1 if state == "open" else 0)
        log.info(f"breaker.{state}", service=self.service, **extra)


@dataclass
class _Call:
    trial: bool
    bad: bool = False

    def failed(self) -> None:
        """Count this call as a failure although it returned (a 5xx, a 429)."""
        self.bad = True


class FailFast(Node):
    """A node whose own retries (``max_retries``) stop at an open circuit: retrying a call
    the breaker refuses would only spin, so ``CircuitOpen`` goes straight to
    ``exec_fallback`` and fails the step with its message."""

    def _exec(self, prep_res: Any) -> Any:
        for retry in range(self.max_retries):
            self.cur_retry = retry
            try:
                return self.exec(prep_res)
            except CircuitOpen as exc:
                return self.exec_fallback(prep_res, exc)
            except Exception as exc:
                if self.cur_retry == self.max_retries - 1:
                    return self.exec_fallback(prep_res, exc)
                if self.wait > 0:
                    time.sleep(self.wait)
        return None
