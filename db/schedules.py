"""The SQL of schedules: definitions, the due ones, and firing a tick once.

Every function takes the run store (its ``sa`` database) and compiles for SQLite and
PostgreSQL alike. Times compare against the database's clock (``store.now()``), so every
process agrees on which ticks are due.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, Uuid, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.errors import Conflict
from db.models import schedules
from db.store import RunStore
from db.types import UTCDateTime

S = schedules
PUBLIC = [c for c in S.c if c.name != "tenant"]
DEFINITION = ("flow", "version", "cron", "every", "timezone", "input")


def _sa(store: RunStore) -> Any:
    return store.sa  # type: ignore[attr-defined]


async def create(store: RunStore, row: Mapping[str, Any]) -> dict[str, Any]:
    """Insert a schedule; a name the tenant already uses is a 409."""
    try:
        async with _sa(store).write() as conn:
            await conn.execute(insert(S).values(**row))
    except IntegrityError:
        raise Conflict(f"the tenant already has a schedule named {row['name']!r}") from None
    return await get(store, row["tenant"], row["id"]) or dict(row)


async def get(store: RunStore, tenant: str, schedule_id: uuid.UUID) -> dict[str, Any] | None:
    query = select(*PUBLIC).where(S.c.id == schedule_id, S.c.tenant == tenant)
    async with _sa(store).read() as conn:
        row = (await conn.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def list_page(
    store: RunStore, tenant: str, after: uuid.UUID | None, limit: int, flow: str | None = None
) -> list[dict[str, Any]]:
    query = select(*PUBLIC).where(S.c.tenant == tenant).order_by(S.c.id).limit(limit)
    if after is not None:
        query = query.where(S.c.id > after)
    if flow is not None:
        query = query.where(S.c.flow == flow)
    async with _sa(store).read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def change(
    store: RunStore, tenant: str, schedule_id: uuid.UUID, values: Mapping[str, Any]
) -> bool:
    """Set ``values`` on the tenant's schedule; False when there is no such schedule."""
    query = (
        update(S)
        .where(S.c.id == schedule_id, S.c.tenant == tenant)
        .values(**values, updated_at=await store.now())
    )
    async with _sa(store).write() as conn:
        return bool((await conn.execute(query)).rowcount)


async def remove(store: RunStore, tenant: str, schedule_id: uuid.UUID) -> bool:
    async with _sa(store).write() as conn:
        gone = await conn.execute(delete(S).where(S.c.id == schedule_id, S.c.tenant == tenant))
    return bool(gone.rowcount)


async def due(
    store: RunStore, now: datetime, limit: int, flows: Sequence[str]
) -> list[dict[str, Any]]:
    """Enabled schedules of ``flows`` whose next tick has come, the longest due first."""
    query = (
        select(S)
        .where(S.c.enabled.is_(True), S.c.next_run_at <= now, S.c.flow.in_(flows))
        .order_by(S.c.next_run_at)
        .limit(limit)
    )
    async with _sa(store).read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def soonest(store: RunStore, flows: Sequence[str]) -> datetime | None:
    """The next tick of any enabled schedule of ``flows``."""
    query = select(func.min(S.c.next_run_at)).where(S.c.enabled.is_(True), S.c.flow.in_(flows))
    async with _sa(store).read() as conn:
        return (await conn.execute(query)).scalar()


@dataclass(slots=True)
class Fired:
    """A tick some process fired: the schedule moves from ``tick`` to ``next_tick``."""

    schedule_id: uuid.UUID
    tick: datetime
    next_tick: datetime
    run_id: uuid.UUID | None
    error: str | None


_ADVANCE = (
    update(S)
    .where(S.c.id == bindparam("b_id", type_=Uuid()), S.c.next_run_at == bindparam("b_tick"))
    .values(
        next_run_at=bindparam("b_next", type_=UTCDateTime()),
        last_tick_at=bindparam("b_tick", type_=UTCDateTime()),
        last_run_id=func.coalesce(bindparam("b_run", type_=Uuid()), S.c.last_run_id),
        last_error=bindparam("b_error", type_=String()),
    )
)


async def advance(store: RunStore, fired: Sequence[Fired]) -> None:
    """Move each schedule on from the tick it fired, in one transaction; a schedule another
    process moved on already is left as it is (the update is conditional on the tick)."""
    if not fired:
        return
    params = [
        {
            "b_id": f.schedule_id,
            "b_tick": f.tick,
            "b_next": f.next_tick,
            "b_run": f.run_id,
            "b_error": f.error[:500] if f.error else None,
        }
        for f in fired
    ]
    async with _sa(store).write() as conn:
        await conn.execute(_ADVANCE, params)


async def declare(store: RunStore, rows: list[dict[str, Any]]) -> int:
    """Schedules declared in code: insert new names, update changed definitions (their
    next tick anew); whether one is enabled stays what an operator last set. How many changed."""
    changed = 0
    for row in rows:
        key = (S.c.tenant == row["tenant"], S.c.name == row["name"])
        async with _sa(store).read() as conn:
            found = (await conn.execute(select(S).where(*key))).mappings().first()
        if found is None:
            try:
                async with _sa(store).write() as conn:
                    await conn.execute(insert(S).values(**row))
                changed += 1
            except IntegrityError:
                pass  # another process declared it first
            continue
        if any(found[k] != row[k] for k in DEFINITION):
            values = {k: row[k] for k in DEFINITION}
            values.update(next_run_at=row["next_run_at"], updated_at=row["updated_at"])
            async with _sa(store).write() as conn:
                await conn.execute(update(S).where(*key).values(**values))
            changed += 1
    return changed
