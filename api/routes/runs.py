"""Runs: start, read, long-poll, list, steps, cancel."""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.auditing import audit_record
from api.authz import (
    AUDIT_SCOPE_KEY,
    Permission,
    Requires,
    allowed,
    can_see_run,
    list_scope,
)
from api.deps import app_state
from api.openapi import ETAG, LOCATION, REPLAYED, errors
from api.pagination import CURSOR_PATTERN, keyset_page, parse_cursor
from api.problems import field_errors
from api.routes.keys import TENANT_PATTERN
from api.routing import LeanRoute
from api.schemas import (
    Moment,
    RunCreate,
    RunOut,
    RunPage,
    RunStatus,
    StateOut,
    StepOut,
    StepPage,
    json_problems,
)
from api.serialize import etag, json_response, page, run_data, step_data
from api.state import SETTLED, AppState
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.ids import parse_uuid
from core.jsonutil import canonical_json
from core.metrics import RUNS_CREATED
from core.principal import Principal
from db.audit import audit_row
from db.store import TERMINAL, Idempotency, NewRun, RunFilter
from flows.registry import FlowSpec
from workers.new_runs import new_run
from workers.state_history import state_after

router = APIRouter(tags=["runs"], route_class=LeanRoute)

FLOW_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # what flows.registry accepts
WaitParam = Annotated[float, Query(ge=0, description="Seconds to wait (capped at WAIT_CAP)")]
RunReader = Annotated[Principal, Requires(Permission.run_read)]
MOMENT = "An RFC 3339 date-time; without an offset, UTC"
MAX_STEPS_PAGE = 1000  # a page of a long run's history stays a bounded answer
MAX_SEQ = 2**31 - 1  # the seq column is a 32-bit integer
SEQ_TEXT = re.compile(r"[0-9]{1,10}")


def run_response(
    row: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    debug: bool = False,
) -> Response:
    """``debug``: the caller sees tracebacks (``runs:internals``)."""
    body = run_data(row, debug=debug)
    return json_response(RunOut, body, status, {"ETag": etag(row), **(headers or {})})


def sees_internals(principal: Principal) -> bool:
    """May the caller see a run's internals: tracebacks, step deltas, the shared store."""
    return allowed(principal, Permission.run_internals)


async def visible_run(state: AppState, principal: Principal, run_id: str) -> Any:
    parsed = parse_uuid(run_id)
    tenant, subject = list_scope(principal)
    row = None
    if parsed is not None:
        row = await state.store.get(parsed, tenant=tenant, principal=subject)
    if row is None or not can_see_run(principal, row):
        raise NotFound(f"run '{run_id}' not found")
    return row


# The status poll first: the hottest call matches the first route.
@router.get(
    "/v1/runs/{run_id}",
    operation_id="getRun",
    response_model=RunOut,
    responses={
        200: {"headers": ETAG},
        304: {"description": "Not modified: `If-None-Match` names this version", "headers": ETAG},
        **errors(404, 422),
    },
    summary="Read a run; long-poll with ?wait=",
)
async def get_run(
    run_id: str,
    request: Request,
    principal: RunReader,
    wait: WaitParam = 0,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    state = app_state(request)
    row = await visible_run(state, principal, run_id)
    wait = min(wait, state.settings.wait_cap)
    if wait > 0:
        if _matches(if_none_match, etag(row)):
            await state.wait_for_change(row["id"], wait, since_version=row["version"])
            row = await state.store.get(row["id"]) or row
        elif row["status"] not in SETTLED and if_none_match is None:
            await state.wait_for_change(row["id"], wait)
            row = await state.store.get(row["id"]) or row
    tag = etag(row)
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    return run_response(row, debug=sees_internals(principal))


def _matches(if_none_match: str | None, tag: str) -> bool:
    """If-None-Match as RFC 9110 compares it: ``*``, or a list of tags, weak (W/) or not."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in if_none_match.split(","))


@router.post(
    "/v1/flows/{flow}/runs",
    operation_id="createRun",
    response_model=RunOut,
    status_code=201,
    responses={
        201: {"description": "The run, finished", "headers": LOCATION | ETAG | REPLAYED},
        202: {
            "model": RunOut,
            "description": "The run so far, still going",
            "headers": LOCATION | ETAG | REPLAYED,
        },
        **errors(400, 404, 415, 422),
    },
    summary="Start a run",
)
async def create_run(
    flow: str,
    body: RunCreate,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_start)],
    wait: WaitParam = 0,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> Response:
    state = app_state(request)
    await request.app.state.declared_flows.knows(flow)  # posted since this process started?
    spec, new = plan_run(state, flow, body, principal)
    state.admission.check_priority(principal, body.priority)
    await state.admission.admit(principal.tenant)
    mode = new.mode
    idem = None
    if idempotency_key is not None:
        # no version asked: the body digests as it did before versions could be asked for
        unasked = {"version"} if body.version is None else None
        digest = hashlib.sha256(
            canonical_json(body.model_dump(mode="json", exclude=unasked))
        ).hexdigest()
        idem = Idempotency(idempotency_key, digest, state.settings.idempotency_ttl)
    wait = min(wait, state.settings.wait_cap)
    # A background run answered at once is a 202 with its Location: its audit entry is known
    # now, so it is written in the run's own transaction instead of one more after it.
    intent = request.scope.get(AUDIT_SCOPE_KEY)
    audit_ahead: list[tuple[Any, dict[str, Any]]] = []

    def audit_rows(run_id: uuid.UUID) -> list[tuple[Any, dict[str, Any]]]:
        headers = {b"location": f"/v1/runs/{run_id}".encode()}
        audit_ahead.append(audit_row(audit_record(request.scope, intent, 202, headers)))
        return audit_ahead

    ahead = intent is not None and mode != "inline" and wait <= 0
    row, created = await state.store.create(new, idem, extra_rows=audit_rows if ahead else None)
    if created and ahead:
        request.scope.pop(AUDIT_SCOPE_KEY, None)  # written: the middleware must not again
    if created:
        RUNS_CREATED.labels(spec.name).inc()
        state.admission.admitted(principal.tenant)
        if row["held"]:
            pass  # its tenant's turn comes when one of its runs in flight ends
        elif mode == "inline":
            budget = wait if wait > 0 else state.settings.inline_budget
            wait = budget
            await state.executor.run_inline(
                row["id"], budget, tenant=new.tenant, priority=body.priority
            )
        else:
            try:
                await state.executor.submit(
                    row["id"], priority=body.priority, queue=spec.queue, tenant=new.tenant
                )
            except BaseException:
                if ahead:  # the call fails after all: a failed call has no audit entry
                    with contextlib.suppress(Exception):
                        await request.app.state.security.audit.discard(audit_ahead[0][1]["id"])
                raise
    if wait > 0 and row["status"] not in SETTLED:
        await state.wait_for_change(row["id"], wait)
        row = await state.store.get(row["id"]) or row
    headers = {"Location": f"/v1/runs/{row['id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    status = 201 if row["status"] in TERMINAL else 202
    return run_response(row, status, headers, debug=sees_internals(principal))


def plan_run(
    state: AppState, flow: str, body: RunCreate, principal: Principal
) -> tuple[FlowSpec, NewRun]:
    """The run ``body`` asks for: 404 for an unknown flow or version, 422 for values the store can't
    keep or an input the flow's schema refuses."""
    spec = state.registry.get(flow, body.version)
    unstorable = json_problems(body.input, ("body", "input")) + json_problems(
        body.metadata, ("body", "metadata")
    )
    if unstorable:
        raise InvalidInput("the request holds values JSON can't store", errors=unstorable)
    try:
        initial = spec.validate_input(body.input)
    except ValidationError as exc:
        raise InvalidInput(
            "the input does not match the flow's schema",
            errors=field_errors(exc.errors(), ("body", "input")),
        ) from None
    new = new_run(
        spec,
        initial,
        tenant=principal.tenant,
        principal=principal.subject,
        trigger={"type": "api"},
        mode=None if body.mode == "auto" else body.mode,
        priority=body.priority,
        metadata=body.metadata,
        tenant_limit=state.settings.tenant_concurrency,
    )
    return spec, new


@router.get(
    "/v1/runs",
    operation_id="listRuns",
    response_model=RunPage,
    responses=errors(422),
    summary="List runs, newest first",
)
async def list_runs(
    request: Request,
    principal: RunReader,
    flow: Annotated[str | None, Query(max_length=100, pattern=FLOW_NAME)] = None,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    created_after: Annotated[Moment | None, Query(description=MOMENT)] = None,
    created_before: Annotated[Moment | None, Query(description=MOMENT)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100, pattern=CURSOR_PATTERN)] = None,
    tenant: Annotated[
        str | None,
        Query(
            max_length=100,
            pattern=TENANT_PATTERN,
            description="Only this tenant's runs (cross-tenant admins; others see their own)",
        ),
    ] = None,
) -> Response:
    scope, subject = list_scope(principal)
    if scope is None:
        scope = tenant
    elif tenant is not None and tenant != scope:
        return json_response(RunPage, page([]))
    rows = await app_state(request).store.list(
        RunFilter(
            tenant=scope,
            principal=subject,
            flow=flow,
            statuses=list(dict.fromkeys(status or [])),
            created_after=_aware(created_after, "created_after"),
            created_before=_aware(created_before, "created_before"),
            limit=limit + 1,
            before_id=parse_cursor(cursor),
        )
    )
    rows, next_cursor = keyset_page(rows, limit, "id")
    debug = sees_internals(principal)
    items = [run_data(r, debug=debug) for r in rows]
    return json_response(RunPage, page(items, next_cursor))


def _aware(value: datetime | None, name: str) -> datetime | None:
    """The moment in UTC (naive means UTC); one past the datetime range is a 422."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{name} is out of range",
            errors=[
                {
                    "loc": ["query", name],
                    "path": f"query.{name}",
                    "msg": "out of the datetime range once in UTC",
                    "type": "datetime_out_of_range",
                }
            ],
        ) from None


@router.get(
    "/v1/runs/{run_id}/steps",
    operation_id="listRunSteps",
    response_model=StepPage,
    responses=errors(403, 404, 422),
    summary="The run's steps in seq order, a page at a time",
)
async def list_steps(
    run_id: str,
    request: Request,
    principal: RunReader,
    limit: Annotated[int, Query(ge=1, le=MAX_STEPS_PAGE)] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=10, pattern=r"^[0-9]{1,10}$", description="A page's next_cursor"),
    ] = None,
    include: Annotated[
        list[Literal["delta"]] | None,
        Query(description="`delta`: each step's changes to the shared store (not for consumers)"),
    ] = None,
) -> Response:
    state = app_state(request)
    row = await visible_run(state, principal, run_id)
    debug = sees_internals(principal)
    deltas = "delta" in (include or ())
    if deltas and not debug:
        raise Forbidden(f"the {principal.role} role may not see step deltas")
    after = _step_cursor(cursor)
    steps = await state.store.steps(row["id"], after=after, limit=limit + 1, delta=deltas)
    steps, next_cursor = keyset_page(steps, limit, "seq")
    internals = allowed(principal, Permission.flow_internals)
    items = [step_data(s, internals=internals, debug=debug, delta=deltas) for s in steps]
    return json_response(StepPage, page(items, next_cursor))


@router.get(
    "/v1/runs/{run_id}/steps/{seq}",
    operation_id="getRunStep",
    response_model=StepOut,
    responses=errors(404),
    summary="One step of a run, with its delta",
)
async def get_step(run_id: str, seq: str, request: Request, principal: RunReader) -> Response:
    state = app_state(request)
    row = await visible_run(state, principal, run_id)
    number = _seq_number(seq)
    found = []
    if number is not None:
        found = await state.store.steps(row["id"], after=number - 1, limit=1, delta=True)
    if not found or found[0]["seq"] != number:
        raise NotFound(f"run '{run_id}' has no step '{seq}'")
    debug = sees_internals(principal)
    internals = allowed(principal, Permission.flow_internals)
    return json_response(
        StepOut, step_data(found[0], internals=internals, debug=debug, delta=debug)
    )


def _step_cursor(cursor: str | None) -> int:
    """The seq a page of steps continues after. A number past any seq a step can have
    continues after the last one: an empty page, never a database overflow."""
    if cursor is None:
        return 0
    return min(int(cursor), MAX_SEQ)


def _seq_number(text: str) -> int | None:
    """A step's seq from the path: a whole number a step can have, else None (404)."""
    if SEQ_TEXT.fullmatch(text) is None or not 1 <= int(text) <= MAX_SEQ:
        return None
    return int(text)


@router.get(
    "/v1/runs/{run_id}/state",
    operation_id="getRunState",
    response_model=StateOut,
    responses=errors(404, 422),
    summary="The shared store as it stood after a step (the latest without ?seq=)",
)
async def get_state(
    run_id: str,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_internals)],
    seq: Annotated[
        int | None,
        Query(ge=0, le=MAX_SEQ, description="After this step (0: the input); default the last"),
    ] = None,
) -> Response:
    state = app_state(request)
    row = await visible_run(state, principal, run_id)
    if seq is None:
        seq = row["seq"]
    elif seq > row["seq"]:
        raise InvalidInput(
            f"run '{run_id}' has {row['seq']} steps so far",
            errors=[
                {
                    "loc": ["query", "seq"],
                    "path": "query.seq",
                    "msg": f"past the run's last step ({row['seq']})",
                    "type": "less_than_equal",
                }
            ],
        )
    shared = await state_after(state.store, row, seq, max_bytes=state.settings.max_store_bytes)
    return json_response(StateOut, {"seq": seq, "state": shared})


@router.post(
    "/v1/runs/{run_id}/cancel",
    operation_id="cancelRun",
    response_model=RunOut,
    responses={200: {"headers": ETAG}, **errors(404, 409)},
    summary="Cancel a run",
)
async def cancel_run(
    run_id: str,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_cancel)],
) -> Response:
    state = app_state(request)
    row = await visible_run(state, principal, run_id)
    if row["status"] in TERMINAL and row["status"] != "cancelled":
        raise Conflict(f"run '{run_id}' already {row['status']}")
    row = await state.store.cancel(row["id"]) or row
    state.executor.changes.publish(row["id"])
    return run_response(row, debug=sees_internals(principal))
