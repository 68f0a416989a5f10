"""Request and response bodies; response models document the API in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out"]
StepStatus = Literal["succeeded", "failed", "timed_out", "cancelled"]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict, description="The flow's input")
    mode: Literal["auto", "inline", "background"] = "auto"
    priority: int = Field(default=0, ge=0, le=9, description="0-9, higher runs first")
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorOut(BaseModel):
    type: str
    message: str
    node: str | None = None


class RunOut(BaseModel):
    id: str
    flow: str
    flow_version: str
    status: RunStatus
    mode: str
    priority: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    current_node: str | None
    steps: int = Field(description="Steps committed so far")
    cancel_requested: bool
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: ErrorOut | None
    metadata: dict[str, Any]


class StepOut(BaseModel):
    seq: int
    node: str
    status: StepStatus
    attempts: int
    action: str | None
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    worker: str
    error: ErrorOut | None


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class StepPage(BaseModel):
    items: list[StepOut]
    next_cursor: str | None


class FlowSummary(BaseModel):
    name: str
    version: str
    description: str
    mode: str
    queue: str
    output: list[str] | None
    max_steps: int
    step_timeout: float | None
    run_timeout: float | None
    concurrency: int | None
    graph_hash: str
    input_schema: dict[str, Any]


class FlowDetail(FlowSummary):
    graph: dict[str, Any]
    mermaid: str


class FlowPage(BaseModel):
    items: list[FlowSummary]
    next_cursor: str | None = None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
