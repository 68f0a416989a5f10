"""The live shared store in Redis: one hash per run, any worker can carry the run on.

Key ``pocketrun:run:{<run id>}``: field ``k:<shared key>`` holds that key's JSON value and
field ``#seq`` the step counter the whole hash reflects. A step's delta is applied by one
Lua script, fenced by ``#seq`` (it applies only on top of the step before it), after the
step committed in the database. The database stays the durable record (step deltas and
periodic snapshots): a worker that finds the hash missing, or at another ``#seq`` than the
database's, rebuilds the store from the database and seeds the hash again. Every Redis
error is swallowed and opens a short circuit breaker, so losing Redis loses speed, never
runs. Finished runs' keys expire after ``REDIS_FINISHED_TTL``, idle ones after
``REDIS_STORE_TTL``. Changes are announced on the ``pocketrun:changes`` channel.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog

from core.settings import Settings
from db.store import Claimed
from workers.store import Delta, SharedStore

log = structlog.get_logger("pocketrun.redis_store")

CHANGES_CHANNEL = "pocketrun:changes"
SEQ = b"#seq"
PREFIX = b"k:"

# KEYS[1] hash; ARGV: expected seq, new seq, ttl ms, number of sets, number of appends, the
# message to publish on CHANGES_CHANNEL once applied (the run id; '' for none), then
# key/value pairs to set, then key/items pairs to append (``items`` a JSON array appended to
# the JSON array at that key), then deleted keys. 1 applied, 0 missing (Redis lost it; a
# hash without a list an append needs counts as lost and is dropped, to be seeded again),
# -1 another seq (stale). Announcing the change from the script saves each step a round
# trip of its own.
APPLY = """
local cur = redis.call('HGET', KEYS[1], '#seq')
if not cur then return 0 end
if cur ~= ARGV[1] then return -1 end
local sets = tonumber(ARGV[4])
local adds = tonumber(ARGV[5])
local first_add = 7 + 2 * sets
local lists = {}
for j = 0, adds - 1 do
  local old = redis.call('HGET', KEYS[1], 'k:' .. ARGV[first_add + 2 * j])
  if not old or string.sub(old, 1, 1) ~= '[' then
    redis.call('DEL', KEYS[1])
    return 0
  end
  lists[j] = old
end
local i = 7
for _ = 1, sets do
  redis.call('HSET', KEYS[1], 'k:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = 0, adds - 1 do
  local old, items = lists[j], ARGV[i + 1]
  local new = items
  if old ~= '[]' then new = string.sub(old, 1, -2) .. ',' .. string.sub(items, 2) end
  redis.call('HSET', KEYS[1], 'k:' .. ARGV[i], new)
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], 'k:' .. ARGV[i])
  i = i + 1
end
redis.call('HSET', KEYS[1], '#seq', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[6] ~= '' then redis.call('PUBLISH', 'pocketrun:changes', ARGV[6]) end
return 1
"""

# KEYS[1] hash; ARGV: seq, ttl ms, force (1/0), then key/value pairs. Replaces the hash with
# the whole store at ``seq``; without force only when the hash is missing or older.
SEED = """
if ARGV[3] ~= '1' then
  local cur = redis.call('HGET', KEYS[1], '#seq')
  if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[1])
local i = 4
while i < #ARGV do
  redis.call('HSET', KEYS[1], 'k:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], '#seq', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


def store_key(run_id: uuid.UUID | str) -> str:
    return f"pocketrun:run:{{{run_id}}}"


def _raw(store: SharedStore) -> dict[str, bytes]:
    return store._bytes  # the committed JSON per key; same package, read-only here


class RedisStore:
    """The engine's store hook (``RunEngine(store_sync=...)``) backed by Redis."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._apply = client.register_script(APPLY)
        self._seed = client.register_script(SEED)
        self._down_until = 0.0
        self.stats = {"hits": 0, "rebuilds": 0, "applied": 0, "reseeded": 0, "errors": 0}
        self._notify_tasks: set[asyncio.Task] = set()
        self._announced: uuid.UUID | None = None  # the apply script publishes this change
        self._applying: dict[uuid.UUID, asyncio.Task] = {}  # each run's last apply in flight

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self.stats["errors"] += 1
        if self.available:
            log.warning("redis unavailable; using the database only", op=what, error=repr(exc))
        self._down_until = time.monotonic() + 2.0

    def _ttl_ms(self, finished: bool = False) -> int:
        ttl = self.settings.redis_finished_ttl if finished else self.settings.redis_store_ttl
        return int(ttl * 1000)

    async def load(
        self, claimed: Claimed, rebuild: Callable[[Claimed], Awaitable[SharedStore]]
    ) -> SharedStore:
        """The run's store at ``claimed.seq``: from Redis when it has exactly that step."""
        key = store_key(claimed.id)
        await self._settled(claimed.id)
        if claimed.seq > 0 and self.available:
            try:
                raw = await self.client.hgetall(key)
            except Exception as exc:
                self._failed("load", exc)
                raw = None
            if raw and raw.get(SEQ) == str(claimed.seq).encode():
                self.stats["hits"] += 1
                values = {k[2:].decode(): v for k, v in raw.items() if k.startswith(PREFIX)}
                return SharedStore.from_raw(values, max_bytes=self.settings.max_store_bytes)
        store = await rebuild(claimed)
        if claimed.seq > 0:
            self.stats["rebuilds"] += 1
            await self._write_seed(key, claimed.seq, store, force=True)
        return store

    async def _write_seed(self, key: str, seq: int, store: SharedStore, *, force: bool) -> None:
        if not self.available:
            return
        args: list[Any] = [seq, self._ttl_ms(), 1 if force else 0]
        for k, v in _raw(store).items():
            args += [k, v]
        try:
            await self._seed(keys=[key], args=args)
            self.stats["reseeded"] += 1
        except Exception as exc:
            self._failed("seed", exc)

    async def committed(
        self,
        run_id: uuid.UUID,
        old_seq: int,
        new_seq: int,
        delta: Delta,
        store: SharedStore,
        done: bool,
    ) -> None:
        """After the database committed step ``new_seq``: apply its delta (fenced).

        Sent without waiting for the reply, so the round trip overlaps the run's next step;
        a run's applies go out one after another (each after the previous one's reply),
        ``load``, ``ended`` and ``flush`` wait for them. The database committed first, and
        the fence makes a late apply harmless: one that finds the hash moved on (another
        process took the run over and reseeded it) changes nothing."""
        if not self.available:
            return
        args: list[Any] = [
            old_seq,
            new_seq,
            self._ttl_ms(done),
            len(delta.set),
            len(delta.add),
            str(run_id),
        ]
        for k, v in delta.set.items():
            args += [k, v]
        for k, items in delta.add.items():
            args += [k, items]
        args += delta.deleted
        # the store the database just confirmed, for a reseed; the engine's copy moves on
        values = None if done else dict(_raw(store))
        previous = self._applying.get(run_id)
        task = asyncio.get_running_loop().create_task(
            self._apply_after(previous, run_id, new_seq, args, values)
        )
        self._applying[run_id] = task
        task.add_done_callback(lambda t: self._forget_apply(run_id, t))
        # the engine announces the commit (``notify``) right after this returns: the apply
        # publishes it instead, from the script or after it
        self._announced = run_id

    def _forget_apply(self, run_id: uuid.UUID, task: asyncio.Task) -> None:
        if self._applying.get(run_id) is task:
            del self._applying[run_id]

    async def _apply_after(
        self,
        previous: asyncio.Task | None,
        run_id: uuid.UUID,
        new_seq: int,
        args: list[Any],
        values: dict[str, bytes] | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        if not self.available:
            return  # Redis failed meanwhile: the database holds the step
        key = store_key(run_id)
        try:
            result = await self._apply(keys=[key], args=args)
        except Exception as exc:
            self._failed("apply", exc)
            result = None
        if result == 1:
            self.stats["applied"] += 1
            return  # the script published the change
        if result == 0 and values is not None:
            # Redis lost the run (restart, eviction) or never had it: seed it from this
            # process's copy, which the database just confirmed.
            await self._write_seed(
                key,
                new_seq,
                SharedStore.from_raw(values, max_bytes=self.settings.max_store_bytes),
                force=False,
            )
        await self._notify(run_id)

    async def _settled(self, run_id: uuid.UUID) -> None:
        """Wait (briefly) for the run's applies still in flight in this process."""
        pending = self._applying.get(run_id)
        if pending is not None:
            await asyncio.wait({pending}, timeout=5.0)

    async def ended(self, run_id: uuid.UUID) -> None:
        """The run reached a terminal status: let its keys expire soon."""
        await self._settled(run_id)
        if not self.available:
            return
        try:
            await self.client.pexpire(store_key(run_id), self._ttl_ms(True))
        except Exception as exc:
            self._failed("expire", exc)

    def notify(self, run_id: uuid.UUID) -> None:
        """Tell API processes (their long polls) that the run changed; fire and forget."""
        if self._announced is not None:
            announced, self._announced = self._announced, None
            if announced == run_id:
                return  # the apply script published it already
        if not self.available:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._notify(run_id))
        except RuntimeError:
            return
        self._notify_tasks.add(task)
        task.add_done_callback(self._notify_tasks.discard)

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait briefly for the notifications still in flight. A Celery task's event loop
        stops when the task returns: a notification still pending then (typically the
        run's last) would go out only with the process's next task, and long polls would
        learn of the change from their database backstop, hundreds of ms later. The
        applies still in flight go out too (they announce their steps)."""
        pending = {*self._notify_tasks, *self._applying.values()}
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def _notify(self, run_id: uuid.UUID) -> None:
        try:
            await self.client.publish(CHANGES_CHANNEL, str(run_id))
        except Exception as exc:
            self._failed("publish", exc)

    async def read(self, run_id: uuid.UUID) -> tuple[int | None, dict[str, Any]]:
        """(seq, values) as Redis holds them; for tests and operators."""
        import orjson

        raw = await self.client.hgetall(store_key(run_id))
        seq = int(raw[SEQ]) if SEQ in raw else None
        values = {k[2:].decode(): orjson.loads(v) for k, v in raw.items() if k.startswith(PREFIX)}
        return seq, values
