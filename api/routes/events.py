"""A run's event stream (SSE): its history from the record, then live, resumable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from api.authz import Permission, Requires, allowed
from api.deps import app_state
from api.events import CUT_EVENT, RunEventStream
from api.openapi import errors
from api.routes.runs import visible_run
from core.events import (
    OUTPUT_EVENT,
    PROGRESS_EVENT,
    RESET_EVENT,
    RUN_FINISHED_EVENT,
    RUN_STATUS_EVENT,
    RUN_WAITING_EVENT,
    STEP_FINISHED_EVENT,
    STEP_STARTED_EVENT,
)
from core.principal import Principal

router = APIRouter(tags=["runs"])

# One message of the stream (OpenAPI 3.1 has no itemSchema: tools read ``schema`` as the
# shape of each event); ``data`` is JSON text, its shape set by ``event`` (DESIGN.md 10).
SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "type": "string",
            "enum": [
                RUN_STATUS_EVENT,
                STEP_STARTED_EVENT,
                OUTPUT_EVENT,
                RESET_EVENT,
                PROGRESS_EVENT,
                STEP_FINISHED_EVENT,
                RUN_WAITING_EVENT,
                RUN_FINISHED_EVENT,
                CUT_EVENT,
            ],
        },
        "id": {"type": "string", "pattern": "^[0-9]{1,16}$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
PING_SECONDS = 15  # a comment line on an idle stream keeps proxies from closing it
SEND_TIMEOUT = 30  # a client that takes no bytes for this long is dropped


@router.get(
    "/v1/runs/{run_id}/events",
    operation_id="streamRunEvents",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-sent events: run.status, step.started, node.output, "
            "node.output.reset, node.progress, step.finished, run.waiting, run.finished (the last)",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **errors(404, 422),
    },
    summary="Stream a run's events; resume with Last-Event-ID or ?after=",
)
async def stream_events(
    run_id: str,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_read)],
    after: Annotated[int | None, Query(ge=0, le=2**53, description="Resume after this id")] = None,
    last_event_id: Annotated[
        str | None,
        Header(max_length=100, description="The id of the last event received"),
    ] = None,
) -> EventSourceResponse:
    state = app_state(request)
    run = await visible_run(state, principal, run_id)
    start = after if after is not None else _last_event_id(last_event_id)
    stream = RunEventStream(
        state.store,
        state.executor.events,
        dict(run),
        internals=allowed(principal, Permission.flow_internals),
        debug=allowed(principal, Permission.run_internals),
        stopping=state.draining.is_set,
    )
    return EventSourceResponse(
        stream.events(start),
        ping=PING_SECONDS,
        send_timeout=SEND_TIMEOUT,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _last_event_id(value: str | None) -> int:
    """The id to resume after. Anything but an id this stream could have sent (up to 16
    digits) replays the stream from its start, as if the client had sent none."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 16:
        return 0
    return int(value)
