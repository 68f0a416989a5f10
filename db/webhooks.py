"""The SQL of outbound webhooks: subscriptions, the delivery outbox, the attempt log.

Every function takes the run store (its ``sa`` database) and compiles for SQLite and
PostgreSQL alike. Leases use the database's clock (``store.now()``), so two processes
never send one attempt at the same time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update

from core.ids import uuid7
from db.models import webhook_attempts, webhook_deliveries, webhook_subscriptions
from db.store import RunStore

SUBS = webhook_subscriptions
DEL = webhook_deliveries
ATT = webhook_attempts
PUBLIC = [SUBS.c.id, SUBS.c.url, SUBS.c.events, SUBS.c.flow, SUBS.c.enabled, SUBS.c.created_at]


def _sa(store: RunStore) -> Any:
    return store.sa  # type: ignore[attr-defined]


async def create_subscription(
    store: RunStore,
    tenant: str,
    url: str,
    events: Sequence[str],
    flow: str | None,
    secret: str,
    by: str,
) -> dict[str, Any]:
    row = {
        "id": uuid7(),
        "tenant": tenant,
        "url": url,
        "events": list(events),
        "flow": flow,
        "secret": secret,
        "enabled": True,
        "created_at": await store.now(),
        "created_by": by,
    }
    async with _sa(store).write() as conn:
        await conn.execute(insert(SUBS).values(**row))
    return row


async def list_subscriptions(
    store: RunStore, tenant: str, after: uuid.UUID | None, limit: int
) -> list[dict[str, Any]]:
    query = select(*PUBLIC).where(SUBS.c.tenant == tenant).order_by(SUBS.c.id).limit(limit)
    if after is not None:
        query = query.where(SUBS.c.id > after)
    async with _sa(store).read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def get_subscription(
    store: RunStore, tenant: str, sub_id: uuid.UUID
) -> dict[str, Any] | None:
    query = select(*PUBLIC).where(SUBS.c.id == sub_id, SUBS.c.tenant == tenant)
    async with _sa(store).read() as conn:
        row = (await conn.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def delete_subscription(store: RunStore, tenant: str, sub_id: uuid.UUID) -> bool:
    async with _sa(store).write() as conn:
        gone = await conn.execute(delete(SUBS).where(SUBS.c.id == sub_id, SUBS.c.tenant == tenant))
        if gone.rowcount:
            await conn.execute(delete(DEL).where(DEL.c.subscription_id == sub_id))
            await conn.execute(delete(ATT).where(ATT.c.subscription_id == sub_id))
    return bool(gone.rowcount)


async def set_enabled(store: RunStore, tenant: str, sub_id: uuid.UUID, enabled: bool) -> bool:
    query = update(SUBS).where(SUBS.c.id == sub_id, SUBS.c.tenant == tenant)
    async with _sa(store).write() as conn:
        done = await conn.execute(query.values(enabled=enabled))
    return bool(done.rowcount)


async def subscribed_tenants(store: RunStore) -> frozenset[str]:
    """The tenants with at least one enabled subscription."""
    query = select(SUBS.c.tenant).where(SUBS.c.enabled.is_(True)).distinct()
    async with _sa(store).read() as conn:
        return frozenset((await conn.execute(query)).scalars())


async def record(
    store: RunStore, tenant: str, flow: str, event: str, payload: Mapping[str, Any]
) -> int:
    """Put ``event`` in the outbox of every enabled subscription of ``tenant`` that wants it."""
    query = select(SUBS.c.id, SUBS.c.events, SUBS.c.flow).where(
        SUBS.c.tenant == tenant, SUBS.c.enabled.is_(True)
    )
    async with _sa(store).read() as conn:
        subs = (await conn.execute(query)).mappings().all()
    wanted = [s["id"] for s in subs if event in s["events"] and s["flow"] in (None, flow)]
    if not wanted:
        return 0
    now = await store.now()
    rows = [
        {
            "id": uuid7(),
            "subscription_id": sub_id,
            "event": event,
            "payload": dict(payload),
            "status": "pending",
            "attempts": 0,
            "next_at": now,
            "lease_until": None,
            "created_at": now,
        }
        for sub_id in wanted
    ]
    async with _sa(store).write() as conn:
        await conn.execute(insert(DEL), rows)
    return len(rows)


async def claim_due(store: RunStore, lease: float, limit: int) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due deliveries (with their subscription's url and secret)."""
    now = await store.now()
    free = or_(DEL.c.lease_until.is_(None), DEL.c.lease_until < now)
    due = and_(DEL.c.status == "pending", DEL.c.next_at <= now, free)
    query = (
        select(
            DEL.c.id,
            DEL.c.subscription_id,
            DEL.c.event,
            DEL.c.payload,
            DEL.c.attempts,
            DEL.c.created_at,
            SUBS.c.url,
            SUBS.c.secret,
        )
        .join(SUBS, SUBS.c.id == DEL.c.subscription_id)
        .where(due)
        .order_by(DEL.c.next_at)
        .limit(limit)
    )
    async with _sa(store).read() as conn:
        candidates = [dict(r) for r in (await conn.execute(query)).mappings()]
    if not candidates:
        return []
    until = now + timedelta(seconds=lease)
    ids = [row["id"] for row in candidates]
    take = update(DEL).where(DEL.c.id.in_(ids), due).values(lease_until=until)
    async with _sa(store).write() as conn:  # the due condition again: one winner per delivery
        won = {r[0] for r in await conn.execute(take.returning(DEL.c.id))}
    return [{**row, "claimed_at": now} for row in candidates if row["id"] in won]


async def finish_attempt(
    store: RunStore,
    delivery: Mapping[str, Any],
    *,
    at: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: float,
    retry_at: datetime | None,
) -> None:
    """Log one attempt; the delivery is delivered (2xx), due again at ``retry_at``, or failed."""
    ok = status_code is not None and 200 <= status_code < 300
    status = "delivered" if ok else ("pending" if retry_at is not None else "failed")
    values: dict[str, Any] = {"status": status, "attempts": DEL.c.attempts + 1, "lease_until": None}
    if retry_at is not None and not ok:
        values["next_at"] = retry_at
    async with _sa(store).write() as conn:
        await conn.execute(update(DEL).where(DEL.c.id == delivery["id"]).values(**values))
        await conn.execute(
            insert(ATT).values(
                id=uuid7(),
                delivery_id=delivery["id"],
                subscription_id=delivery["subscription_id"],
                at=at,
                status_code=status_code,
                error=(error or None) and error[:500],
                duration_ms=duration_ms,
            )
        )


async def attempts(
    store: RunStore, sub_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[dict[str, Any]]:
    """The delivery log of one subscription, oldest attempt first."""
    query = (
        select(
            ATT.c.id,
            ATT.c.delivery_id,
            DEL.c.event,
            DEL.c.status.label("delivery_status"),
            ATT.c.at,
            ATT.c.status_code,
            ATT.c.error,
            ATT.c.duration_ms,
        )
        .join(DEL, DEL.c.id == ATT.c.delivery_id)
        .where(ATT.c.subscription_id == sub_id)
        .order_by(ATT.c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(ATT.c.id > after)
    async with _sa(store).read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def replay(store: RunStore, sub_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
    """Send one delivery again, whatever became of it."""
    now = await store.now()
    query = update(DEL).where(DEL.c.id == delivery_id, DEL.c.subscription_id == sub_id)
    async with _sa(store).write() as conn:
        done = await conn.execute(query.values(status="pending", next_at=now, lease_until=None))
    return bool(done.rowcount)
