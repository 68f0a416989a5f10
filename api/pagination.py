"""Keyset pagination: a page's ``next_cursor`` is the id of its last item."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from core.errors import InvalidInput
from core.ids import parse_uuid

# What a page hands out: a run or audit entry id (a UUID, in its canonical spelling).
CURSOR_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def parse_cursor(cursor: str | None) -> uuid.UUID | None:
    """The id a page continues after; 422 for anything that no page handed out."""
    if cursor is None:
        return None
    parsed = parse_uuid(cursor)
    if parsed is None:
        raise InvalidInput(
            "cursor is not valid",
            errors=[
                {
                    "loc": ["query", "cursor"],
                    "path": "query.cursor",
                    "msg": "not a cursor from a page",
                    "type": "invalid_cursor",
                }
            ],
        )
    return parsed


def keyset_page(rows: Sequence[Any], limit: int, key: str) -> tuple[Sequence[Any], str | None]:
    """A page from ``limit + 1`` rows read: the first ``limit``, and the next page's cursor
    (the last one's ``key``) when there was one more."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, str(rows[-1][key])
