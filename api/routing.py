"""``LeanRoute``: FastAPI routes whose calls skip FastAPI's general dependency solver.

FastAPI resolves every dependency and parameter of every call through generic machinery
that re-inspects each declaration per request; on a status poll that costs several times
the database read. A ``LeanRoute`` endpoint that needs only path, query and header values,
the ``Request`` and dependencies taking nothing but the ``Request`` (``Requires(...)``) is
called directly: its declared fields, inspected once when the route is built, validate the
same values with the same ``loc`` in a 422, the same dependency functions run first, and
the OpenAPI is FastAPI's own. An endpoint needing anything else gets FastAPI's handler.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request, params
from fastapi._compat import (
    ModelField,
    Undefined,
    field_annotation_is_sequence,
    get_missing_field_error,
)
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import is_json_media

Handler = Callable[[Request], Awaitable[Response]]


_IMMUTABLE = (type(None), bool, int, float, str, bytes)


@dataclass(frozen=True, slots=True)
class _Param:
    """One declared path, query or header value, read as FastAPI reads it."""

    field: ModelField
    where: str  # "path", "query" or "header"
    many: bool  # a list: every occurrence
    required: bool
    check_default: bool  # validate the default too

    @classmethod
    def of(cls, field: ModelField) -> _Param:
        info = field.field_info
        many = field_annotation_is_sequence(info.annotation)
        where = info.in_.value  # type: ignore[attr-defined]
        return cls(field, where, many, info.is_required(), bool(info.validate_default))

    def read(self, request: Request) -> tuple[Any, list[Any]]:
        field, alias = self.field, self.field.alias
        value: Any = None
        if self.where == "path":
            value = request.path_params.get(alias)
        elif self.where == "header" or request.scope.get("query_string"):
            source = request.query_params if self.where == "query" else request.headers
            value = source.getlist(alias) if self.many else source.get(alias)
        if value is None or (self.many and not value):
            if self.required:
                return None, [get_missing_field_error((self.where, alias))]
            default = field.default
            value = default if isinstance(default, _IMMUTABLE) else copy.deepcopy(default)
            if not self.check_default:
                return value, []
        return field.validate(value, loc=(self.where, alias))


def _takes_only_request(dependant: Dependant) -> bool:
    return (
        inspect.iscoroutinefunction(dependant.call)
        and dependant.name is not None
        and dependant.request_param_name is not None
        and not _extras(dependant)
        and not (dependant.path_params or dependant.query_params or dependant.header_params)
        and not (dependant.body_params or dependant.dependencies)
    )


def _extras(dependant: Dependant) -> bool:
    """Anything besides path/query/header values, a JSON body, the Request and dependencies."""
    return bool(
        dependant.cookie_params
        or any(isinstance(f.field_info, params.Form) for f in dependant.body_params)
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.http_connection_param_name
        or dependant.websocket_param_name
    )


def _is_lean(dependant: Dependant) -> bool:
    fields = [*dependant.path_params, *dependant.query_params, *dependant.header_params]
    return (
        inspect.iscoroutinefunction(dependant.call)
        and not _extras(dependant)
        and all(f.field_info.validation_alias is None for f in fields)
        and all(_takes_only_request(sub) for sub in dependant.dependencies)
    )


async def _json_body(request: Request, strict: bool) -> Any:
    """The body as FastAPI's handler reads it: parsed JSON when the content type says JSON
    (or, not strict, says nothing), else the bytes; ``Undefined`` when empty."""
    try:
        raw = await request.body()
        if not raw:
            return Undefined
        content_type = request.headers.get("content-type")
        if is_json_media(content_type) or (not content_type and not strict):
            return json.loads(raw)
        return raw
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error], body=exc.doc) from exc
    except HTTPException:
        raise
    except Exception as exc:  # e.g. a body that is not UTF-8: invalid input, as JSON errors
        error = {"type": "json_invalid", "loc": ("body",), "msg": "the body can't be read as JSON"}
        raise RequestValidationError([{**error, "input": {}}]) from exc


class LeanRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)  # self.app: FastAPI's wrapper around it
        if _is_lean(self.dependant) and self.max_body_size is None:
            self.app = self._direct(self.app, self.get_route_handler())

    @staticmethod
    def _direct(wrapped: ASGIApp, handler: Handler) -> ASGIApp:
        """Serve the route without FastAPI's per-call exit stacks (no dependency here
        has any to unwind); an error goes up to the app's ``ExceptionMiddleware``, which
        answers with the same handlers. Reached only when the app routes to this route
        itself (``serve_first``); an included router rebuilds its routes' apps."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["app"].dependency_overrides:
                await wrapped(scope, receive, send)
                return
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        return app

    def get_route_handler(self) -> Handler:
        dependant = self.dependant
        if not _is_lean(dependant):
            return super().get_route_handler()
        standard: list[Handler] = []  # FastAPI's own, made when first needed
        endpoint = dependant.call
        assert endpoint is not None
        dependencies = [(sub.name, sub.call) for sub in dependant.dependencies]
        values_in = [
            _Param.of(f)
            for f in (*dependant.path_params, *dependant.query_params, *dependant.header_params)
        ]
        request_name = dependant.request_param_name
        body_fields = dependant.body_params
        embed = self._embed_body_fields
        strict = self.strict_content_type
        strict = strict.value if isinstance(strict, DefaultPlaceholder) else strict

        async def handler(request: Request) -> Response:
            if request.app.dependency_overrides:  # a test or a bench swapped dependencies
                if not standard:
                    standard.append(super(LeanRoute, self).get_route_handler())
                return await standard[0](request)
            body = await _json_body(request, strict) if body_fields else Undefined
            values: dict[str, Any] = {}
            for name, call in dependencies:
                values[name] = await call(request)  # type: ignore[index, misc]
            errors: list[Any] = []
            for param in values_in:
                value, wrong = param.read(request)
                if wrong:
                    errors += wrong
                else:
                    values[param.field.name] = value
            if body_fields:
                found, wrong = await request_body_to_args(body_fields, body, embed)
                values.update(found)
                errors += wrong
            if errors:
                raise RequestValidationError(errors)
            if request_name is not None:
                values[request_name] = request
            response = await endpoint(**values)
            if not isinstance(response, Response):  # FastAPI's own handler would encode it
                raise TypeError(f"{self.name} returns no Response: a LeanRoute can't encode it")
            return response

        return handler


def serve_first(app: FastAPI, router: APIRouter) -> None:
    """Make ``router``'s routes the app's first, as its own routes: FastAPI tries routes in
    order, and a route reached through an included router costs two more matching passes.
    Only for a router included as is (no prefix, dependencies, tags or other options) and
    whose paths no other route serves, so no answer changes."""
    routes = app.router.routes
    for index, entry in enumerate(routes):
        if getattr(entry, "original_router", None) is router and _plain(entry.include_context):
            del routes[index]
            for route in router.routes:
                if isinstance(route, APIRoute):
                    route.dependency_overrides_provider = app
            routes[:0] = router.routes
            return


def _plain(context: Any) -> bool:
    """An include with nothing the router's own routes would not carry themselves."""
    return (
        not context.prefix
        and not context.tags
        and not context.dependencies
        and not context.responses
        and not context.callbacks
        and context.deprecated is None
        and context.include_in_schema
        and context.max_body_size is None
    )
