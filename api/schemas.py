"""Request and response bodies; response models document the API in OpenAPI."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from core.text import unstorable

RunStatus = Literal[
    "queued",
    "running",
    "waiting",
    "paused",
    "sleeping",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
]
StepStatus = Literal["succeeded", "failed", "timed_out", "cancelled"]


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?")


def _rfc3339_text(value: Any) -> Any:
    """Only a date-time written out: pydantic alone also takes numbers as Unix times."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2024-05-01T12:00:00Z")
    return value


def _in_range(value: datetime) -> datetime:
    """Refuse a moment with no UTC form in years 1 to 9999 (naive counts as UTC), such as
    ``0001-01-01T00:00:00+01:00`` or ``9999-12-31T23:59:59-23:59``: every later step
    (both databases, the run id bounds) works in UTC. The value is returned as given, so
    a route may still insist on an explicit offset."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError(
                "out of range once in UTC: from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
            ) from None
    return value


# A date-time in RFC 3339 text (as the ``date-time`` format says); without an offset, UTC.
Moment = Annotated[datetime, BeforeValidator(_rfc3339_text), AfterValidator(_in_range)]


def _storable(value: str) -> str:
    reason = unstorable(value)
    if reason is not None:
        raise ValueError(reason)
    return value


# A string field that is stored: text every database can keep (``core.text``).
StoredText = Annotated[str, AfterValidator(_storable)]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict, description="The flow's input")
    version: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="The flow version to run; default: the highest loaded",
    )
    mode: Literal["auto", "inline", "background"] = "auto"
    priority: int = Field(default=0, ge=0, le=9, strict=True, description="0-9, higher runs first")
    metadata: dict[str, Any] = Field(default_factory=dict)


MAX_JSON_DEPTH = 100
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson, and so the shared store, can hold


def json_problems(value: Any, loc: tuple[str | int, ...]) -> list[dict[str, Any]]:
    """Where ``value`` holds what the store can't keep on every database: NUL or unpaired
    surrogates in strings, NaN or infinities, integers past 64 bits, or nesting too deep.
    Each problem is a problem+json ``errors`` item."""
    problems: list[dict[str, Any]] = []

    def add(where: tuple[str | int, ...], msg: str, type_: str) -> None:
        problems.append(
            {"loc": list(where), "path": ".".join(map(str, where)), "msg": msg, "type": type_}
        )

    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(value, loc, 0)]
    while stack and len(problems) < 20:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list) and depth >= MAX_JSON_DEPTH:
            add(where, f"nested deeper than {MAX_JSON_DEPTH} levels", "json_too_deep")
        elif isinstance(item, dict):
            for key, child in item.items():
                if (msg := unstorable(key)) is not None:
                    add((*where, key), f"key: {msg}", "json_invalid_string")
                stack.append((child, (*where, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, (*where, i), depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            if (msg := unstorable(item)) is not None:
                add(where, msg, "json_invalid_string")
        elif isinstance(item, float) and not math.isfinite(item):
            add(where, "NaN and infinities are not JSON numbers", "json_invalid_number")
        elif isinstance(item, int) and not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
            add(where, "integers must fit in 64 bits", "json_invalid_number")
    return problems


class ErrorOut(BaseModel):
    type: str
    message: str
    node: str | None = None
    traceback: str | None = Field(
        default=None,
        description="Where the node's code raised (its frames, file and line); "
        "shown to engineers, operators and admins, null for consumers",
    )


class TriggerOut(BaseModel):
    type: Literal["api", "cli", "schedule", "replay"]
    id: str | None = None
    tick: datetime | None = Field(
        default=None,
        exclude_if=lambda value: value is None,  # only runs a schedule started have one
        description="The schedule's tick this run is for (schedule triggers only)",
    )


class WaitingFor(BaseModel):
    node: str
    request: dict[str, Any]


class ParentOut(BaseModel):
    run: str
    seq: int


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
    trigger: TriggerOut
    waiting_for: WaitingFor | None = Field(
        description="What a waiting run asks for: the node and its request"
    )
    wake_at: datetime | None = Field(
        description="When a sleeping run wakes, or a waiting run's wait times out"
    )
    pause_requested: bool = Field(description="Asked to pause at its next checkpoint")
    parent: ParentOut | None = Field(description="A replay's source run and step")
    retries: int = Field(description="How often an operator carried it on after it ended")
    held: bool = Field(
        default=False,
        description="Queued, and waiting for its tenant's turn: the tenant has its limit of "
        "runs in flight (TENANT_CONCURRENCY)",
    )


class RunResume(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: Any = Field(description="The answer; it must match the request's schema")


class RunRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch: dict[str, Any] = Field(
        default_factory=dict, description="Shared-store keys to set before the step runs again"
    )


class RunReplay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_seq: int = Field(ge=1, le=2**31 - 1, strict=True, description="The step to start at")
    patch: dict[str, Any] = Field(
        default_factory=dict, description="Shared-store keys to set before that step"
    )


class RunMigrate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(
        min_length=1, max_length=100, description="The loaded flow version to move the run to"
    )


class DeltaOut(BaseModel):
    set: dict[str, Any] = Field(description="Keys the step set, with their new values")
    deleted: list[str] = Field(description="Keys the step deleted")
    appended: dict[str, list[Any]] = Field(
        description="Lists the step only appended to: the key, with the items appended"
    )


class StepOut(BaseModel):
    seq: int
    node: str
    status: StepStatus
    attempts: int
    action: str | None
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    worker: str | None = Field(
        description="The worker's name; null without the flows:internals permission"
    )
    error: ErrorOut | None
    output: list[Any] | None = Field(
        default=None,
        description="What the node streamed with emit(), its committed attempt's chunks",
    )
    delta: DeltaOut | None = Field(
        default=None,
        description="What the step did to the shared store: on one step, and on the list "
        "with ?include=delta; null otherwise",
    )
    cached: bool = Field(
        default=False, description="Served from the node cache: the node's exec did not run"
    )


class StateOut(BaseModel):
    seq: int = Field(description="The step the store stood after (0: the run's input)")
    state: dict[str, Any] = Field(description="The shared store")


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


class FlowVersion(BaseModel):
    version: str
    graph_hash: str
    description: str


class FlowDetail(FlowSummary):
    graph: dict[str, Any] | None = Field(
        description="Nodes and edges; null without the flows:internals permission"
    )
    mermaid: str | None = Field(description="null without the flows:internals permission")
    versions: list[FlowVersion] = Field(description="Every loaded version, oldest first")


class FlowPage(BaseModel):
    items: list[FlowSummary]
    next_cursor: str | None = None


class NodeType(BaseModel):
    name: str
    description: str
    params: dict[str, Any] = Field(description="The params' JSON Schema")
    actions: list[str] = Field(description="The actions it returns (edges pick them)")


class NodePage(BaseModel):
    items: list[NodeType]
    next_cursor: str | None = None


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: the location, then the field path")
    path: str = Field(description="``loc`` joined with dots, e.g. ``body.input.name``")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem, sent as ``application/problem+json``."""

    model_config = ConfigDict(extra="allow")  # extension members, e.g. readiness ``checks``

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="For 422: every field that failed, with its path"
    )


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, Any] = Field(description="Each dependency: ``ok``, or what failed")
