"""UUIDv7 run ids: time ordered, so the primary key index is also the creation order."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(ms: int | None = None) -> uuid.UUID:
    """A UUIDv7; ids made by one process in the same millisecond still increase."""
    global _last_ms, _counter
    with _lock:
        now = ms if ms is not None else time.time_ns() // 1_000_000
        if now <= _last_ms:
            now = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                now += 1
                _counter = 0
        else:
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last_ms = now
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (now << 80) | (0x7 << 76) | (_counter << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def uuid7_bound(moment: datetime, *, upper: bool = False) -> uuid.UUID:
    """The smallest (or largest) UUIDv7 that a run created at ``moment`` could have."""
    ms = int(moment.timestamp() * 1000)
    if upper:
        return uuid.UUID(int=(ms << 80) | ((1 << 80) - 1))
    return uuid.UUID(int=ms << 80)


def parse_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return None
