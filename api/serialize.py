"""Database rows to the public JSON shapes of DESIGN.md section 9."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import RowMapping

from flows.registry import FlowSpec


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_json(row: RowMapping) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "flow": row["flow"],
        "flow_version": row["flow_version"],
        "status": row["status"],
        "mode": row["mode"],
        "priority": row["priority"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "current_node": row["current_node"],
        "steps": row["seq"],
        "cancel_requested": row["cancel_requested"],
        "input": row["input"],
        "output": row["output"],
        "error": row["error"],
        "metadata": row["metadata"],
    }


def step_json(row: RowMapping) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "node": row["node"],
        "status": row["status"],
        "attempts": row["attempts"],
        "action": row["action"],
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "duration_ms": round(row["duration_ms"], 3),
        "worker": row["worker"],
        "error": row["error"],
    }


def flow_json(spec: FlowSpec, *, detail: bool = False) -> dict[str, Any]:
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
        body["graph"] = spec.graph.to_json()
        body["mermaid"] = spec.graph.mermaid()
    return body


def etag(row: RowMapping) -> str:
    return f'"{row["id"].hex[:12]}-{row["version"]}"'
