"""A fast path for the hottest call: the status poll ``GET /v1/runs/{run_id}``.

A plain poll (no query string, one Bearer credential the authenticator accepts, a role that
may read runs, a run the caller may see) is answered here, inside ``SecurityMiddleware``,
without FastAPI's routing and dependency resolution, which cost more than the rest of the
call. It answers only 200 (the run, with its ``ETag``) or 304 (``If-None-Match``), with the
bytes and headers ``api.routes.runs.get_run`` gives. Everything else (``?wait=``, a missing
or bad credential, a role without ``runs:read``, a malformed, unknown or hidden id, odd
headers, rate limits or dependency overrides configured) falls through to the route
unchanged, which then decides and answers exactly as before: the fast path never produces
an error of its own.

``CreateFastPath`` does the same for the hottest write, ``POST /v1/flows/{flow}/runs``, in
its plain case: no query string (so no ``?wait=``), no ``Idempotency-Key``, one
``Content-Type: application/json``, a strict JSON body (parsed once, by
``SecurityMiddleware``) that ``RunCreate`` and the flow's input model accept, a Bearer
credential with ``runs:start``, and a background run (``mode`` background, or auto for a
background flow). It answers what ``api.routes.runs.create_run`` answers (202, Location,
ETag, the run) and writes the same rows (the run, its audit entry in the same
transaction); everything else falls through to the route before anything is written.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import Any

from starlette.requests import Request

from api.auditing import audit_record
from api.authz import ROLE_PERMISSIONS, Permission, app_routes, can_see_run
from api.routes.runs import _matches, plan_run
from api.schemas import RunCreate
from api.serialize import etag, run_json
from core.ids import parse_uuid
from core.jsonutil import dumps
from core.metrics import RUNS_CREATED
from db.audit import audit_row
from db.store import TERMINAL

Scope = dict[str, Any]

POLL_PATH = "/v1/runs/{run_id}"
_POLL = re.compile(r"/v1/runs/([^/]+)")
CREATE_PATH = "/v1/flows/{flow}/runs"
_CREATE = re.compile(r"/v1/flows/([^/]+)/runs")
_JSON_HEADERS = (b"content-type", b"application/json")
_RUN_START = Permission.run_start
NOT_JSON: Any = object()  # a body that is not (strict) JSON: never taken by the fast path


def _find_route(app: Any, path: str, method: str) -> Any:
    for route_path, methods, route in app_routes(app):
        if route_path == path and method in methods:
            return route
    return None


def _parts(app: Any) -> tuple[Any, Any] | None:
    """(security, state) when the fast paths may answer: the app is started, no rate limiter
    (its headers and 429s stay with the route) and no dependency overrides (a test or bench
    changed the routes)."""
    app_state = getattr(app, "state", None)
    security = getattr(app_state, "security", None)
    state = getattr(app_state, "pocketrun", None)
    if security is None or state is None or security.limiter is not None:
        return None
    if getattr(app, "dependency_overrides", None):
        return None
    return security, state


async def _principal(security: Any, authorization: bytes | None) -> Any:
    """The principal of a ``Bearer`` credential, or None (the route then answers 401)."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    credentials = credentials.strip()
    if not credentials or scheme.lower() != "bearer":
        return None
    try:
        return await security.authenticator.authenticate(credentials)
    except Exception:  # 401 and the rest: the route says it
        return None


def _handler(app: Any, exc: BaseException) -> Any:
    """The exception handler FastAPI's ``ExceptionMiddleware`` would answer ``exc`` with (the
    500/``Exception`` one is not its: those go on up, to ``RequestMiddleware``)."""
    handlers = getattr(app, "exception_handlers", {})
    for cls in type(exc).__mro__:
        if cls is Exception or cls is BaseException:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


class PollFastPath:
    def __init__(self) -> None:
        self._route: Any = None
        self._resolved = False

    async def __call__(self, scope: Scope, send: Any) -> bool:
        """Answer the poll and return True, or return False and leave it to the route."""
        if scope["method"] != "GET" or scope.get("query_string") or scope.get("root_path"):
            return False
        match = _POLL.fullmatch(scope["path"])
        if match is None:
            return False
        app = scope.get("app")
        parts = _parts(app)
        if parts is None:
            return False
        security, state = parts
        if not self._resolved:  # the route, for scope["route"] (the latency metric's label)
            self._route = _find_route(app, POLL_PATH, "GET")
            self._resolved = True
        route = self._route
        if route is None:
            return False
        authorization = if_none_match = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                if authorization is None:  # the first one, as HTTPBearer reads it
                    authorization = value
            elif key == b"if-none-match":
                if if_none_match is not None:
                    return False
                if_none_match = value.decode("latin-1")
        if if_none_match is not None and len(if_none_match) > 200:
            return False
        principal = await _principal(security, authorization)
        if principal is None or Permission.run_read not in ROLE_PERMISSIONS[principal.role]:
            return False
        run_id = parse_uuid(match.group(1))
        if run_id is None:
            return False
        row = await state.store.get(run_id)
        if row is None or not can_see_run(principal, row):
            return False
        scope["route"] = route
        scope["path_params"] = {"run_id": match.group(1)}
        tag = etag(row)
        if _matches(if_none_match, tag):
            await send(
                {"type": "http.response.start", "status": 304, "headers": [(b"etag", tag.encode())]}
            )
            await send({"type": "http.response.body", "body": b""})
            return True
        body = dumps(run_json(row))
        headers = [
            (b"etag", tag.encode()),
            (b"content-length", str(len(body)).encode()),
            _JSON_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


class CreateFastPath:
    def __init__(self) -> None:
        self._route: Any = None
        self._resolved = False

    async def __call__(self, scope: Scope, send: Any, value: Any) -> bool:
        """Start the run and answer, returning True; or return False having written nothing,
        and leave the call to the route. ``value`` is the body as strict JSON parsed it."""
        if scope["method"] != "POST" or scope.get("query_string") or scope.get("root_path"):
            return False
        match = _CREATE.fullmatch(scope["path"])
        if match is None or not isinstance(value, dict):
            return False
        app = scope.get("app")
        parts = _parts(app)
        if parts is None:
            return False
        security, state = parts
        if not self._resolved:
            self._route = _find_route(app, CREATE_PATH, "POST")
            self._resolved = True
        if self._route is None:
            return False
        authorization = content_type = None
        for key, header in scope["headers"]:
            if key == b"authorization":
                if authorization is None:  # the first one, as HTTPBearer reads it
                    authorization = header
            elif key == b"content-type":
                if content_type is not None:
                    return False
                content_type = header
            elif key == b"idempotency-key":  # replays and their checks: the route's
                return False
        if content_type is None or content_type.lower() != b"application/json":
            return False
        principal = await _principal(security, authorization)
        if principal is None or _RUN_START not in ROLE_PERMISSIONS[principal.role]:
            return False
        flow = match.group(1)
        try:
            body = RunCreate.model_validate(value)
            spec, new = plan_run(state, flow, body, principal)
        except Exception:  # 404, 422: the route says it
            return False
        if new.mode == "inline":
            return False
        scope["route"] = self._route
        scope["path_params"] = {"flow": flow}
        intent = (principal, _RUN_START.audit_action)
        audited: list[tuple[Any, dict[str, Any]]] = []

        def audit_rows(run_id: uuid.UUID) -> list[tuple[Any, dict[str, Any]]]:
            headers = {b"location": f"/v1/runs/{run_id}".encode()}
            audited.append(audit_row(audit_record(scope, intent, 202, headers)))
            return audited

        # From here on this is the call: it answers, or fails, as the route would.
        row, _ = await state.store.create(new, None, extra_rows=audit_rows)
        RUNS_CREATED.labels(spec.name).inc()
        try:
            await state.executor.submit(row["id"], priority=body.priority, queue=spec.queue)
        except Exception as exc:
            # A failed call has no audit entry; the error answers as the route's would.
            with contextlib.suppress(Exception):
                await security.audit.discard(audited[0][1]["id"])
            handler = _handler(app, exc)
            if handler is None:
                raise
            response = await handler(Request(scope), exc)
            await response(scope, _no_receive, send)
            return True
        tag = etag(row)
        payload = dumps(run_json(row))
        headers = [
            (b"location", f"/v1/runs/{row['id']}".encode()),
            (b"etag", tag.encode()),
            (b"content-length", str(len(payload)).encode()),
            _JSON_HEADERS,
        ]
        status = 201 if row["status"] in TERMINAL else 202
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}
