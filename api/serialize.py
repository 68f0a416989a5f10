"""Database rows to the public JSON shapes of DESIGN.md section 9, and those shapes to bytes.

Every JSON body a route sends is its declared response model, validated and serialized by
pydantic (``json_response``): what ``/openapi.json`` says is what goes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from core.events import final_chunks
from flows.registry import FlowSpec

JSON = "application/json"
API_TRIGGER = {"type": "api"}  # runs recorded before triggers were
Row = Mapping[str, Any]


def json_body(model: type[BaseModel], data: Any) -> bytes:
    """``data`` as ``model`` in JSON. A row the model refuses is a server bug (500), never
    the caller's 422."""
    try:
        value = model.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise RuntimeError(f"a response does not match {model.__name__}: {exc}") from None
    return model.__pydantic_serializer__.to_json(value)


def json_response(
    model: type[BaseModel],
    data: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(json_body(model, data), status_code=status, media_type=JSON, headers=headers)


def page(items: list[Any], next_cursor: str | None = None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def run_data(row: Row, *, debug: bool = False) -> dict[str, Any]:
    """``debug``: the error's traceback (``runs:internals``); without it, none."""
    return {
        "id": str(row["id"]),
        "flow": row["flow"],
        "flow_version": row["flow_version"],
        "status": row["status"],
        "mode": row["mode"],
        "priority": row["priority"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "current_node": row["current_node"],
        "steps": row["seq"],
        "cancel_requested": row["cancel_requested"],
        "input": row["input"],
        "output": row["output"],
        "error": error_data(row["error"], debug=debug),
        "metadata": row["metadata"],
        "trigger": row["trigger"] or API_TRIGGER,
        "waiting_for": row["waiting_for"],
        "wake_at": row["wake_at"],
        "pause_requested": row["pause_requested"],
        "parent": (
            {"run": str(row["parent_run_id"]), "seq": row["parent_seq"]}
            if row["parent_run_id"] is not None
            else None
        ),
        "retries": row["retries"],
        "held": row["held"],
    }


def error_data(error: Mapping[str, Any] | None, *, debug: bool) -> Mapping[str, Any] | None:
    """A run's or a step's error; its ``traceback`` only with ``debug``."""
    if error is None or debug or "traceback" not in error:
        return error
    return {key: value for key, value in error.items() if key != "traceback"}


def step_data(
    row: Row, *, internals: bool = True, debug: bool = False, delta: bool = False
) -> dict[str, Any]:
    """``internals``: the caller may see where the step ran (``flows:internals``); the
    worker's name carries a host name, so others get ``worker: null``. ``debug``: the
    error's traceback (``runs:internals``). ``delta``: the step's delta, from a row read
    with it."""
    return {
        "seq": row["seq"],
        "node": row["node"],
        "status": row["status"],
        "attempts": row["attempts"],
        "action": row["action"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_ms": round(row["duration_ms"], 3),
        "worker": row["worker"] if internals else None,
        "error": error_data(row["error"], debug=debug),
        "delta": public_delta(row["delta"]) if delta else None,
        "output": final_chunks(row["output"]) if row.get("output") else None,
        "cached": bool(row.get("cached")),
    }


def public_delta(delta: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored delta (``set``, ``add``, ``del``; None: nothing changed) as the API shows
    it: keys set (whole values), keys deleted, and items appended to lists (``appended``:
    only the new items). One shape for the steps API and ``step.finished``."""
    delta = delta or {}
    return {
        "set": delta.get("set", {}),
        "deleted": delta.get("del", []),
        "appended": delta.get("add", {}),
    }


def flow_data(spec: FlowSpec, *, detail: bool = False, internals: bool = False) -> dict[str, Any]:
    """``detail``: the one-flow shape; its node graph and Mermaid text only with
    ``internals`` (``flows:internals``), else null."""
    body: dict[str, Any] = {
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "mode": spec.mode,
        "queue": spec.queue,
        "output": spec.output,
        "max_steps": spec.max_steps,
        "step_timeout": spec.step_timeout,
        "run_timeout": spec.run_timeout,
        "concurrency": spec.concurrency,
        "graph_hash": spec.graph_hash,
        "input_schema": spec.input_schema(),
    }
    if detail:
        body["graph"] = spec.graph.to_json() if internals else None
        body["mermaid"] = spec.graph.mermaid() if internals else None
    return body


def etag(row: Row) -> str:
    return f'"{row["id"].hex[:12]}-{row["version"]}"'
