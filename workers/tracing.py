"""Spans for the engine: one per run advance, one per step, and their parents.

With tracing off (``core.tracing.ENABLED`` is False) every hook here hands back what it was
given, so the step loop runs exactly the code it runs without tracing.

Parentage: a Celery worker's advance span is a child of the span that sent the message
(the W3C ``traceparent`` rides in the message headers: ``trace_headers`` on the sending
side, ``continued`` on the worker). A run queued inside a process (the local executor,
inline runs) is a child of the span current when it was queued (``remember``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from core import tracing as config

if TYPE_CHECKING:
    from db.store import Claimed
    from workers.runner import StepResult, StepRunner

T = TypeVar("T")
MAX_ORIGINS = 10_000  # runs queued here whose span context is kept for their advance
_origins: OrderedDict[uuid.UUID, otel_context.Context] = OrderedDict()
_NOTHING = contextlib.nullcontext()


def _has_span() -> bool:
    return trace.get_current_span().get_span_context().is_valid


def remember(run_id: uuid.UUID) -> None:
    """Keep the current span as the parent of the run's advance in this process."""
    if not config.ENABLED or not _has_span():
        return
    _origins[run_id] = otel_context.get_current()
    _origins.move_to_end(run_id)
    while len(_origins) > MAX_ORIGINS:
        _origins.popitem(last=False)


def trace_headers(run_id: uuid.UUID | str | None = None) -> dict[str, str]:
    """The W3C trace context of the current span (else of the run's origin) for a message."""
    if not config.ENABLED:
        return {}
    carrier: dict[str, str] = {}
    if _has_span():
        propagate.inject(carrier)
    elif run_id is not None:
        origin = _origins.get(run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(run_id))
        if origin is not None:
            propagate.inject(carrier, context=origin)
    return carrier


def dispatching(run_id: uuid.UUID | str, queue: str) -> contextlib.AbstractContextManager[Any]:
    """A producer span around sending a run's message (its context goes in the headers)."""
    if not config.ENABLED:
        return _NOTHING
    return config.tracer().start_as_current_span(
        f"{queue} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "celery",
            "messaging.destination.name": queue,
            "pocketrun.run.id": str(run_id),
        },
    )


@contextlib.contextmanager
def continued(request: Any) -> Iterator[None]:
    """Make the trace context a Celery task's message carried the current one."""
    if not config.ENABLED or request is None:
        yield
        return
    fields = propagate.get_global_textmap().fields
    carrier = {k: v for k in fields if isinstance(v := getattr(request, k, None), str)}
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def _run_attributes(claimed: Claimed) -> dict[str, Any]:
    return {
        "pocketrun.run.id": str(claimed.id),
        "pocketrun.flow": claimed.flow,
        "pocketrun.flow.version": claimed.flow_version,
    }


async def traced_advance(claimed: Claimed, advance: Awaitable[T]) -> T:
    """``await advance`` inside the run's advance span; the outcome goes on the span."""
    if not config.ENABLED:
        return await advance
    parent = None if _has_span() else _origins.get(claimed.id)
    attributes = {**_run_attributes(claimed), "pocketrun.run.seq_start": claimed.seq}
    with config.tracer().start_as_current_span(
        f"advance {claimed.flow}", context=parent, attributes=attributes
    ) as span:
        outcome = await advance
        span.set_attribute("pocketrun.run.outcome", str(outcome))
        if str(outcome) == "finished":
            _origins.pop(claimed.id, None)
        return outcome


def run_ended(status: str, error: dict[str, Any] | None = None) -> None:
    """The run's final status, on the advance span that ended it."""
    if not config.ENABLED:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("pocketrun.run.status", status)
    if status != "succeeded":
        message = f"{error['type']}: {error['message']}" if error else status
        span.set_status(StatusCode.ERROR, message)


class _TracedRunner:
    """A ``StepRunner`` whose every step is a span."""

    __slots__ = ("_attributes", "_runner")

    def __init__(self, runner: StepRunner, attributes: dict[str, Any]) -> None:
        self._runner = runner
        self._attributes = attributes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    async def step(self, cursor: Any, shared: Any, seq: int, *args: Any) -> StepResult:
        attributes = {**self._attributes, "pocketrun.step.seq": seq}
        with config.tracer().start_as_current_span("step", attributes=attributes) as span:
            result = await self._runner.step(cursor, shared, seq, *args)
            _describe(span, result)
            return result


def _describe(span: trace.Span, result: StepResult) -> None:
    node = result.node
    span.update_name(f"step {node}" if node is not None else "step (flow end)")
    span.set_attribute("pocketrun.step.attempts", result.attempts)
    if node is not None:
        span.set_attribute("pocketrun.node", node)
    if result.action is not None:
        span.set_attribute("pocketrun.step.action", result.action)
    error = result.error
    if error is None:
        span.set_attribute("pocketrun.step.status", "succeeded")
        return
    span.set_attribute("pocketrun.step.status", error.status)
    span.set_attribute("pocketrun.error.type", error.type)
    # the node's own exception (with its stack) when there is one
    span.record_exception(error.__cause__ or error)
    span.set_status(StatusCode.ERROR, f"{error.type}: {error.message}")


def traced_runner(runner: StepRunner, claimed: Claimed) -> StepRunner:
    """``runner`` itself with tracing off; else one that makes a span of each step."""
    if not config.ENABLED:
        return runner
    return cast("StepRunner", _TracedRunner(runner, _run_attributes(claimed)))
