"""JSON in one place: orjson, with the JSON-only rule of the shared store."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def canonical_json(value: Any) -> bytes:
    """One spelling per value: keys sorted, no whitespace (what a fingerprint hashes)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def strict_dumps(value: Any) -> bytes:
    """Serialize plain JSON only: no dataclasses, datetimes or other objects slip through."""
    return orjson.dumps(
        value,
        option=orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_SUBCLASS,
    )


def roundtrip(value: Any) -> Any:
    return orjson.loads(strict_dumps(value))
