"""Declared flows: the documents posted to ``POST /v1/flows``, one row per (name, version)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from core.jsonutil import canonical_json
from db.models import declared_flows
from db.store import RunStore
from db.types import utcnow


class DeclaredFlowRepository:
    def __init__(self, store: RunStore) -> None:
        self.db = store.sa

    async def add(
        self, name: str, version: str, document: dict[str, Any], created_by: str
    ) -> tuple[RowMapping, bool]:
        """Store the document; (the row, True) when new, (the stored row, False) when that
        (name, version) is already stored. The caller compares the documents."""
        values = {
            "name": name,
            "version": version,
            "document": document,
            "created_at": utcnow(),
            "created_by": created_by[:200],
        }
        try:
            async with self.db.write() as conn:
                await conn.execute(insert(declared_flows).values(**values))
            return values, True  # type: ignore[return-value]
        except IntegrityError:
            row = await self.get(name, version)
            if row is None:
                raise
            return row, False

    async def get(self, name: str, version: str) -> RowMapping | None:
        query = select(declared_flows).where(
            declared_flows.c.name == name, declared_flows.c.version == version
        )
        async with self.db.read() as conn:
            return (await conn.execute(query)).mappings().first()

    async def count(self) -> int:
        async with self.db.read() as conn:
            result = await conn.execute(select(func.count()).select_from(declared_flows))
            return int(result.scalar_one())

    async def all(self) -> list[RowMapping]:
        query = select(declared_flows).order_by(
            declared_flows.c.created_at, declared_flows.c.name, declared_flows.c.version
        )
        async with self.db.read() as conn:
            return list((await conn.execute(query)).mappings().all())


def same_document(a: Any, b: Any) -> bool:
    return canonical_json(a) == canonical_json(b)
