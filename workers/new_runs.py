"""The record of a run about to start from a flow's spec: one place for what it carries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from db.store import NewRun
from flows.registry import FlowSpec


def new_run(
    spec: FlowSpec,
    initial: dict[str, Any],
    *,
    tenant: str,
    principal: str,
    trigger: Mapping[str, Any],
    mode: str | None = None,
    priority: int = 0,
    metadata: dict[str, Any] | None = None,
    tenant_limit: int | None = None,
) -> NewRun:
    """A run of ``spec`` on the validated input ``initial``; ``mode`` None: the flow's."""
    return NewRun(
        tenant=tenant,
        principal=principal,
        flow=spec.name,
        flow_version=spec.version,
        graph_hash=spec.graph_hash,
        mode=mode or spec.mode,
        queue=spec.queue,
        priority=priority,
        input=initial,
        metadata=metadata or {},
        run_timeout=spec.run_timeout,
        current_node=spec.start_node,
        trigger=dict(trigger),
        tenant_limit=tenant_limit,
    )
