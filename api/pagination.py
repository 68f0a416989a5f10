"""Keyset pagination: a page's ``next_cursor`` is the id of its last item."""

from __future__ import annotations

import uuid

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
