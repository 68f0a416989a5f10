"""What a run waiting for a person asks for, and whether an answer fits it.

A request is a JSON object that may hold ``prompt`` (text), ``schema`` (a JSON Schema the
answer must match) and ``timeout`` (seconds to wait before the run ends ``timed_out``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import validators
from jsonschema.exceptions import SchemaError

MAX_ANSWER_ERRORS = 20


def request_problem(request: Any) -> str | None:
    """Why ``request`` can't be waited on, or None when it can."""
    if not isinstance(request, Mapping):
        return f"a request for human input must be a JSON object, not {type(request).__name__}"
    prompt = request.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        return "the request's 'prompt' must be text"
    timeout = request.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        return f"the request's 'timeout' must be a number of seconds > 0, not {timeout!r}"
    schema = request.get("schema")
    if schema is not None:
        if not isinstance(schema, (Mapping, bool)):
            return "the request's 'schema' must be a JSON Schema (an object)"
        try:
            validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            return f"the request's 'schema' is not a valid JSON Schema: {exc.message}"
    return None


def answer_errors(schema: Any, payload: Any) -> list[dict[str, Any]]:
    """How ``payload`` fails ``schema``: problem+json ``errors[]`` entries with the field
    path of each failure under ``body.payload``; empty when it fits (or there's no schema)."""
    if schema is None:
        return []
    validator = validators.validator_for(schema)(schema)
    found = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
    errors = []
    for error in found[:MAX_ANSWER_ERRORS]:
        loc = ["body", "payload", *error.absolute_path]
        errors.append(
            {
                "loc": loc,
                "path": ".".join(str(part) for part in loc),
                "msg": error.message,
                "type": f"schema.{error.validator}",
            }
        )
    return errors
