"""The audit log: append-only, newest first when read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.engine import RowMapping

from core.ids import uuid7
from db.models import audit_log
from db.store import RunStore
from db.types import utcnow


@dataclass(slots=True)
class AuditRecord:
    tenant: str
    principal: str
    role: str
    action: str
    target: str | None
    status: int
    request_id: str | None = None
    detail: dict[str, Any] | None = None


def audit_row(entry: AuditRecord) -> tuple[Table, dict[str, Any]]:
    """The entry as a row to insert (``RunStore.insert_rows``), with a fresh time-ordered id:
    lets a caller write it in the same transaction as the change it records."""
    now = utcnow()
    return audit_log, {
        "id": uuid7(int(now.timestamp() * 1000)),
        "at": now,
        "tenant": entry.tenant,
        "principal": entry.principal[:200],
        "role": entry.role,
        "action": entry.action,
        "target": entry.target[:200] if entry.target else None,
        "status": entry.status,
        "request_id": entry.request_id,
        "detail": entry.detail,
    }


class AuditRepository:
    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.db = store.sa

    async def record(self, entry: AuditRecord) -> uuid.UUID:
        table, values = audit_row(entry)
        # Group commit: concurrent calls' entries share one write transaction.
        await self.store.insert_rows((table, values))
        return values["id"]

    async def discard(self, entry_id: uuid.UUID) -> None:
        """Remove an entry written ahead of a call that then failed (see ``audit_row``)."""
        async with self.db.write() as conn:
            await conn.execute(delete(audit_log).where(audit_log.c.id == entry_id))

    async def list(
        self,
        tenant: str | None,
        *,
        action: str | None = None,
        limit: int = 50,
        before_id: uuid.UUID | None = None,
    ) -> list[RowMapping]:
        query = select(audit_log)
        if tenant is not None:
            query = query.where(audit_log.c.tenant == tenant)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        query = query.order_by(audit_log.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return list((await conn.execute(query)).mappings().all())
