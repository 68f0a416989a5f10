"""Text every database can store: the one predicate the API checks each field with.

PostgreSQL refuses the NUL character in ``text`` and ``jsonb`` and anything that is not
valid UTF-8 (a lone surrogate such as ``"\\ud800"`` has no UTF-8 form); SQLite takes both,
so the same request would succeed on one database and fail with a 500 on the other.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

NUL = "the NUL character is not allowed"
SURROGATE = "unpaired surrogates are not allowed"
NOT_UTF8 = "not valid UTF-8 once percent-decoded"


def unstorable(text: str) -> str | None:
    """Why ``text`` can't be stored on every database, or None when it can."""
    if "\x00" in text:
        return NUL
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE
    return None


def storable(text: str) -> str:
    """``text`` made storable everywhere: NUL written out as ``\\x00``, lone surrogates
    as backslash escapes (for text pocketrun writes itself, e.g. a node's error)."""
    text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unstorable_bytes(raw: bytes, *, plus_is_space: bool = False) -> str | None:
    """Why percent-encoded ``raw`` (a path or a query component) does not decode to
    storable text, or None. Strict UTF-8: ``%ED%A0%80`` (a surrogate) and ``%FF`` fail."""
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    decoded = unquote_to_bytes(raw) if b"%" in raw else raw
    if b"\x00" in decoded:
        return NUL
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8
    return None
