"""Outbound webhooks: the engine notes run events, a sender in every process POSTs them.

``note`` is all the engine's hot path pays: one task that writes the outbox rows
(``db.webhooks.record``) after the checkpoint has committed. ``WebhookSender`` runs in the
API server's and the Celery workers' background loops: it leases due deliveries from the
database, POSTs them with bounded concurrency, signed as Standard Webhooks defines, and
retries with exponential backoff and jitter until a 2xx or ``WEBHOOK_GIVE_UP`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import random
import secrets
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import structlog

from core.settings import Settings
from db import webhooks as sql
from db.store import RunStore
from nodes.net import PrivateAddress, public_address

log = structlog.get_logger("pocketrun.webhooks")

EVENTS = ("run.status", "run.waiting", "run.finished")
_pending: set[asyncio.Task[Any]] = set()
RUN_FIELDS = (
    "id",
    "flow",
    "version",
    "tenant",
    "status",
    "current_node",
    "error",
    "output",
    "created_at",
    "started_at",
    "finished_at",
)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of id.timestamp.body>`` keyed by the secret's bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


SUBSCRIBERS_TTL = 1.0  # seconds a process trusts its list of subscribed tenants


@dataclass
class _Subscribers:
    """The tenants with an enabled subscription, as this process last read them."""

    tenants: frozenset[str] = frozenset()
    read_at: float = -math.inf
    reading: asyncio.Task[frozenset[str]] | None = None

    def fresh(self) -> bool:
        return time.monotonic() - self.read_at < SUBSCRIBERS_TTL


_subscribers: weakref.WeakKeyDictionary[RunStore, _Subscribers] = weakref.WeakKeyDictionary()


def subscriptions_changed(store: RunStore) -> None:
    """This process changed a subscription: read the subscribed tenants anew."""
    known = _subscribers.get(store)
    if known is not None:
        known.read_at = -math.inf


async def _subscribed(store: RunStore) -> frozenset[str]:
    known = _subscribers.setdefault(store, _Subscribers())
    if known.fresh():
        return known.tenants
    if known.reading is None:
        known.reading = asyncio.get_running_loop().create_task(sql.subscribed_tenants(store))
    reading = known.reading
    try:
        tenants = await asyncio.shield(reading)
    finally:
        if known.reading is reading:
            known.reading = None
    known.tenants, known.read_at = tenants, time.monotonic()
    return tenants


def note(
    store: RunStore,
    run_id: uuid.UUID,
    tenant: str,
    events: tuple[str, ...],
    data: Mapping[str, Any] | None = None,
) -> None:
    """Queue ``events`` of ``run_id`` for its tenant's subscribers, off the caller's path.

    A tenant with no subscription costs nothing here: which tenants have one is read at
    most once a second per process, so a new subscription hears of runs from then on.
    """
    known = _subscribers.get(store)
    if known is not None and known.fresh() and tenant not in known.tenants:
        return
    task = asyncio.get_running_loop().create_task(_record(store, run_id, tenant, events, data))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _record(
    store: RunStore,
    run_id: uuid.UUID,
    tenant: str,
    events: tuple[str, ...],
    data: Mapping[str, Any] | None,
) -> None:
    try:
        if tenant not in await _subscribed(store):
            return
        run = await store.get(run_id)
        if run is None:
            return
        body = {k: run.get(k) for k in RUN_FIELDS if k in run}
        if data:
            body.update(data)
        body = orjson.loads(orjson.dumps(body, default=str))
        for event in events:
            await sql.record(store, run["tenant"], run["flow"], event, body)
    except Exception as exc:  # never the run's problem
        log.warning("recording a webhook event failed", run_id=str(run_id), error=repr(exc))


async def flush() -> None:
    """Wait for the outbox writes queued so far (a process about to stop)."""
    if _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before retry ``attempts`` (1: the first): base, doubling, +-20% jitter."""
    return settings.webhook_retry_base * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)


class WebhookSender:
    def __init__(self, store: RunStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.slots = asyncio.Semaphore(settings.webhook_concurrency)
        self.client = httpx.AsyncClient(
            timeout=settings.webhook_timeout, follow_redirects=False, trust_env=False
        )

    async def run(self) -> None:
        try:
            while True:
                sent = await self.tick()
                if not sent:
                    await asyncio.sleep(self.settings.webhook_poll)
        finally:
            await self.client.aclose()

    async def tick(self) -> int:
        """Lease what is due (as many as there are free slots) and send it; how many."""
        try:
            free = max(1, self.settings.webhook_concurrency - len(self._inflight()))
            lease = self.settings.webhook_timeout + 30.0
            due = await sql.claim_due(self.store, lease, free)
        except Exception as exc:  # the database is away: try again later
            log.warning("claiming webhook deliveries failed", error=repr(exc))
            return 0
        for delivery in due:
            task = asyncio.create_task(self._send_one(delivery))
            _sending.add(task)
            task.add_done_callback(_sending.discard)
        return len(due)

    def _inflight(self) -> set[asyncio.Task[Any]]:
        return _sending

    async def _send_one(self, delivery: Mapping[str, Any]) -> None:
        claimed = time.perf_counter()
        async with self.slots:
            began = time.perf_counter()
            at = delivery["claimed_at"] + timedelta(seconds=began - claimed)  # database clock
            code, error = await self.post(delivery)
            duration_ms = (time.perf_counter() - began) * 1000
            retry_at: datetime | None = None
            if code is None or not 200 <= code < 300:
                delay = backoff(self.settings, delivery["attempts"] + 1)
                giving_up = delivery["created_at"] + timedelta(
                    seconds=self.settings.webhook_give_up
                )
                if at + timedelta(seconds=delay) <= giving_up:
                    retry_at = at + timedelta(seconds=delay)
            try:
                await sql.finish_attempt(
                    self.store,
                    delivery,
                    at=at,
                    status_code=code,
                    error=error,
                    duration_ms=duration_ms,
                    retry_at=retry_at,
                )
            except Exception as exc:  # the lease runs out; the delivery is sent again
                log.warning("logging a webhook attempt failed", error=repr(exc))

    async def post(self, delivery: Mapping[str, Any]) -> tuple[int | None, str | None]:
        """POST one delivery to the address checked just now: (status code, error)."""
        url = delivery["url"]
        parts = urlsplit(url)
        try:
            address = await asyncio.to_thread(
                public_address, url, allow_private=self.settings.webhook_allow_private
            )
        except PrivateAddress as exc:
            return None, f"refused: {exc}".replace("HTTP_ALLOW", "WEBHOOK_ALLOW")
        except ValueError as exc:
            return None, str(exc)
        host = f"[{address}]" if ":" in address else address
        netloc = f"{host}:{parts.port}" if parts.port else host
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        msg_id = str(delivery["id"])
        timestamp = int(time.time())
        payload = {
            "type": delivery["event"],
            "timestamp": delivery["created_at"].isoformat(),
            "data": delivery["payload"],
        }
        body = orjson.dumps(payload)
        headers = {
            "host": parts.netloc.rsplit("@", 1)[-1],
            "content-type": "application/json",
            "user-agent": "pocketrun-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(delivery["secret"], msg_id, timestamp, body),
        }
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        try:
            response = await self.client.post(
                target, content=body, headers=headers, extensions=extensions
            )
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        return response.status_code, None


_sending: set[asyncio.Task[Any]] = set()
