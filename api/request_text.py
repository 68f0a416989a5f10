"""The path, the query and the stored headers of a request, checked for text that no
database can store (``core.text``) before routing: a 422 naming where, never a 500 from
PostgreSQL. Checked on the raw bytes, percent-decoded strictly, because Starlette decodes
invalid UTF-8 leniently (``%FF`` becomes U+FFFD) and so would hide it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from core.text import unstorable, unstorable_bytes

Scope = dict[str, Any]

# Header values the API writes to the database; printable ASCII only (as RFC 8941 strings).
STORED_HEADERS = (b"idempotency-key",)
PRINTABLE_ASCII = "printable ASCII only"


def _error(loc: list[str], msg: str) -> dict[str, Any]:
    return {"loc": loc, "path": ".".join(loc), "msg": msg, "type": "text_unstorable"}


def _clean(raw: bytes) -> bool:
    """Nothing to decode: plain ASCII without escapes (the request line holds no NUL)."""
    return raw.isascii() and b"%" not in raw


def request_text_errors(scope: Scope) -> list[dict[str, Any]]:
    """Every place in the request line and stored headers holding unstorable text."""
    errors: list[dict[str, Any]] = []
    raw_path = scope.get("raw_path")
    if raw_path is None:
        reason = unstorable(scope.get("path", ""))
    else:
        reason = None if _clean(raw_path) else unstorable_bytes(raw_path)
    if reason is not None:
        errors.append(_error(["path"], reason))
    query = scope.get("query_string", b"")
    if query and not _clean(query):
        errors.extend(_query_errors(query))
    for key, value in scope.get("headers", ()):
        if key in STORED_HEADERS and not _printable(value):
            errors.append(_error(["header", key.decode()], PRINTABLE_ASCII))
    return errors


def _query_errors(query: bytes) -> list[dict[str, Any]]:
    errors = []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        reason = unstorable_bytes(name, plus_is_space=True) or unstorable_bytes(
            value, plus_is_space=True
        )
        if reason is not None:
            label = unquote_plus(name.decode("latin-1"), errors="replace")
            label = label.replace("\x00", "")[:100] or "?"
            errors.append(_error(["query", label], reason))
    return errors


def _printable(value: bytes) -> bool:
    return all(0x20 <= byte <= 0x7E for byte in value)
