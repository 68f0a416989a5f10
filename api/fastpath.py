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
"""

from __future__ import annotations

import re
from typing import Any

from api.authz import ROLE_PERMISSIONS, Permission, app_routes, can_see_run
from api.routes.runs import _matches
from api.serialize import etag, run_json
from core.ids import parse_uuid
from core.jsonutil import dumps

Scope = dict[str, Any]

POLL_PATH = "/v1/runs/{run_id}"
_POLL = re.compile(r"/v1/runs/([^/]+)")
_JSON_HEADERS = (b"content-type", b"application/json")


class PollFastPath:
    def __init__(self) -> None:
        self._route: Any = None
        self._resolved = False

    def _poll_route(self, app: Any) -> Any:
        """The APIRoute the poll belongs to, for ``scope["route"]`` (the latency metric's
        label); None when the app has no such route (then no fast path)."""
        if not self._resolved:
            for path, methods, route in app_routes(app):
                if path == POLL_PATH and "GET" in methods:
                    self._route = route
                    break
            self._resolved = True
        return self._route

    async def __call__(self, scope: Scope, send: Any) -> bool:
        """Answer the poll and return True, or return False and leave it to the route."""
        if scope["method"] != "GET" or scope.get("query_string") or scope.get("root_path"):
            return False
        match = _POLL.fullmatch(scope["path"])
        if match is None:
            return False
        app = scope.get("app")
        security = getattr(getattr(app, "state", None), "security", None)
        state = getattr(getattr(app, "state", None), "pocketrun", None)
        if security is None or state is None or security.limiter is not None:
            return False
        if getattr(app, "dependency_overrides", None):  # a test or bench changed the route
            return False
        route = self._poll_route(app)
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
        if authorization is None or (if_none_match is not None and len(if_none_match) > 200):
            return False
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if not credentials or scheme.lower() != "bearer":
            return False
        try:
            principal = await security.authenticator.authenticate(credentials)
        except Exception:  # 401 and the rest: the route says it
            return False
        if Permission.run_read not in ROLE_PERMISSIONS[principal.role]:
            return False
        run_id = parse_uuid(match.group(1))
        if run_id is None:
            return False
        row = await state.runs.get(run_id)
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
