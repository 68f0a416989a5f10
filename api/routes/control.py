"""Control of a started run: resume a waiting one, retry, replay, pause and unpause, move
it to another version of its flow.

The checks and the state changes live in ``workers.control``; these routes decide who may
(``api.authz``), hand the run to the executor once it is queued again, and answer with the
run. Every one of them is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.authz import AUDIT_SCOPE_KEY, Permission, Requires
from api.deps import app_state
from api.openapi import ETAG, LOCATION, errors
from api.routes.runs import run_response, sees_internals, visible_run
from api.routing import LeanRoute
from api.schemas import RunMigrate, RunOut, RunReplay, RunResume, RunRetry
from api.state import AppState
from core.errors import Conflict, InvalidInput
from core.principal import Principal
from workers.control import RunControl

router = APIRouter(tags=["runs"], route_class=LeanRoute)


def _control(state: AppState) -> RunControl:
    return RunControl(
        state.store,
        max_store_bytes=state.settings.max_store_bytes,
        tenant_limit=state.settings.tenant_concurrency,
    )


async def _queued_again(state: AppState, row: Any) -> None:
    """A run queued again goes to the executor now (the sweeper would, later)."""
    if row["status"] == "queued" and not row["held"]:
        await state.executor.submit(
            row["id"], priority=row["priority"], queue=row["queue"], tenant=row["tenant"]
        )
    state.executor.changes.publish(row["id"])


def _audited_as(request: Request, action: str) -> None:
    intent = request.scope.get(AUDIT_SCOPE_KEY)
    if intent is not None:
        request.scope[AUDIT_SCOPE_KEY] = (intent[0], action)


@router.post(
    "/v1/runs/{run_id}/resume",
    operation_id="resumeRun",
    response_model=RunOut,
    responses={200: {"headers": ETAG}, **errors(404, 409, 422)},
    summary="Deliver the answer a waiting run asked for",
)
async def resume_run(
    run_id: str,
    body: RunResume,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_resume)],
) -> Response:
    state = app_state(request)
    row = await visible_run(state, principal, run_id)
    row = await _control(state).resume(row["id"], body.payload, dispatched=True)
    await _queued_again(state, row)
    return run_response(row, debug=sees_internals(principal))


@router.post(
    "/v1/runs/{run_id}/retry",
    operation_id="retryRun",
    response_model=RunOut,
    responses={200: {"headers": ETAG}, **errors(404, 409, 422)},
    summary="Carry a failed, timed-out or cancelled run on from its failed step",
)
async def retry_run(
    run_id: str,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_retry)],
    body: RunRetry | None = None,
) -> Response:
    state = app_state(request)
    row = await visible_run(state, principal, run_id)
    now = await state.store.now()
    patch = body.patch if body is not None else None
    row = await _control(state).retry(row["id"], patch, now, dispatched=True)
    await _queued_again(state, row)
    return run_response(row, debug=sees_internals(principal))


@router.post(
    "/v1/runs/{run_id}/replay",
    operation_id="replayRun",
    response_model=RunOut,
    status_code=201,
    responses={201: {"headers": LOCATION | ETAG}, **errors(404, 409, 422)},
    summary="Start a new run from the state before one step of a finished run",
)
async def replay_run(
    run_id: str,
    body: RunReplay,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_retry)],
) -> Response:
    state = app_state(request)
    _audited_as(request, "run.replay")
    parent = await visible_run(state, principal, run_id)
    spec = state.registry.find(parent["flow"], parent["flow_version"])
    if spec is None:
        raise Conflict(
            f"flow '{parent['flow']}' version {parent['flow_version']} is not loaded here"
        )
    await state.admission.admit(parent["tenant"])
    row = await _control(state).replay(
        parent, body.from_seq, body.patch, principal=principal.subject, run_timeout=spec.run_timeout
    )
    state.admission.admitted(parent["tenant"])
    await _queued_again(state, row)
    headers = {"Location": f"/v1/runs/{row['id']}"}
    return run_response(row, 201, headers, debug=sees_internals(principal))


@router.post(
    "/v1/runs/{run_id}/pause",
    operation_id="pauseRun",
    response_model=RunOut,
    responses={200: {"headers": ETAG}, **errors(404, 409)},
    summary="Pause a queued run now, a running one at its next checkpoint",
)
async def pause_run(
    run_id: str,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_control)],
) -> Response:
    state = app_state(request)
    _audited_as(request, "run.pause")
    row = await visible_run(state, principal, run_id)
    row = await _control(state).pause(row["id"])
    state.executor.changes.publish(row["id"])
    return run_response(row, debug=sees_internals(principal))


@router.post(
    "/v1/runs/{run_id}/unpause",
    operation_id="unpauseRun",
    response_model=RunOut,
    responses={200: {"headers": ETAG}, **errors(404, 409)},
    summary="Queue a paused run again",
)
async def unpause_run(
    run_id: str,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_control)],
) -> Response:
    state = app_state(request)
    _audited_as(request, "run.unpause")
    row = await visible_run(state, principal, run_id)
    row = await _control(state).unpause(row["id"], dispatched=True)
    await _queued_again(state, row)
    return run_response(row, debug=sees_internals(principal))


@router.post(
    "/v1/runs/{run_id}/migrate",
    operation_id="migrateRun",
    response_model=RunOut,
    responses={200: {"headers": ETAG}, **errors(404, 409, 422)},
    summary="Move a run that holds nothing to another loaded version of its flow",
)
async def migrate_run(
    run_id: str,
    body: RunMigrate,
    request: Request,
    principal: Annotated[Principal, Requires(Permission.run_control)],
) -> Response:
    state = app_state(request)
    _audited_as(request, "run.migrate")
    row = await visible_run(state, principal, run_id)
    target = state.registry.find(row["flow"], body.version)
    if target is None:
        loaded = ", ".join(s.version for s in state.registry.versions(row["flow"])) or "none"
        raise InvalidInput(
            f"flow '{row['flow']}' has no version '{body.version}' loaded here",
            errors=[
                {
                    "loc": ["body", "version"],
                    "path": "body.version",
                    "msg": f"not a loaded version of '{row['flow']}' (loaded: {loaded})",
                    "type": "unknown_version",
                }
            ],
        )
    row = await _control(state).migrate(row["id"], state.registry, target)
    await _queued_again(state, row)
    return run_response(row, debug=sees_internals(principal))
