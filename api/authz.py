"""One place that decides what a principal may see and do.

Routes declare what they need, ``principal: Annotated[Principal, Requires(Permission.x)]``;
the role table below (DESIGN.md section 5) decides who has it. Permissions that change
something are audited automatically (``api.hardening``) when the call succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from functools import cache
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute

from api.auth import current_principal, deny
from core.errors import Forbidden
from core.principal import Principal, Role


class Permission(StrEnum):
    flow_read = "flows:read"
    flow_internals = "flows:internals"
    flow_register = "flows:register"
    run_start = "runs:start"
    run_read = "runs:read"
    run_cancel = "runs:cancel"
    run_resume = "runs:resume"
    run_retry = "runs:retry"  # retry and replay
    run_control = "runs:control"  # pause and unpause
    run_internals = "runs:internals"  # tracebacks, step deltas, the shared store
    key_create = "keys:create"
    key_read = "keys:read"
    key_revoke = "keys:revoke"
    audit_read = "audit:read"
    tenant_read = "tenants:read"  # a tenant's limit of runs in flight and its load
    tenant_limit = "tenants:limits"  # override it (admins)
    cache_clear = "cache:clear"  # drop node cache entries of the tenant's flows
    webhook_read = "webhooks:read"  # a tenant's webhooks and their delivery log
    webhook_manage = "webhooks:manage"  # subscribe, enable, delete, replay
    schedule_read = "schedules:read"  # a tenant's schedules
    schedule_manage = "schedules:manage"  # create, change, enable, disable, delete
    session_read = "session:read"  # who the caller is and what it may do (the dashboard)
    worker_read = "workers:read"  # live workers, what they run, queue depth

    @property
    def audit_action(self) -> str | None:
        """The audit log's ``action`` for a mutating permission; None for reads."""
        return _AUDITED.get(self)


_AUDITED = {
    Permission.run_start: "run.start",
    Permission.run_cancel: "run.cancel",
    Permission.run_resume: "run.resume",
    Permission.run_retry: "run.retry",
    Permission.run_control: "run.control",
    Permission.flow_register: "flow.register",
    Permission.key_create: "key.create",
    Permission.key_revoke: "key.revoke",
    Permission.tenant_limit: "tenant.limits",
    Permission.cache_clear: "cache.clear",
    Permission.webhook_manage: "webhook.manage",
    Permission.schedule_manage: "schedule.manage",
}

P = Permission
_CATALOG = {P.flow_read}
_SESSION = {P.session_read}  # every role
_OWN_RUNS = {P.run_start, P.run_read, P.run_cancel, P.run_resume}
_ALL_RUNS = {P.run_read, P.run_cancel, P.run_resume, P.run_retry, P.run_control}
_RUN_INTERNALS = {P.run_internals}  # DESIGN.md section 10: never consumers
_TENANT = {  # never consumers
    P.tenant_read,
    P.cache_clear,
    P.webhook_read,
    P.webhook_manage,
    P.schedule_read,
    P.schedule_manage,
}
_OPERATIONS = {P.worker_read}  # never consumers: worker names carry host names

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # consumer: read catalog; start runs; read, cancel, resume its own
    Role.consumer: frozenset(_SESSION | _CATALOG | _OWN_RUNS),
    # operator: read catalog; read, cancel, resume, retry, replay, pause and unpause all
    # runs of the tenant, and
    # see their internals (tracebacks, step deltas, the shared store)
    Role.operator: frozenset(
        _SESSION | _CATALOG | _ALL_RUNS | _RUN_INTERNALS | _TENANT | _OPERATIONS
    ),
    # engineer: as operator, plus flow internals and registration
    Role.engineer: frozenset(
        _SESSION
        | _CATALOG
        | _ALL_RUNS
        | _RUN_INTERNALS
        | _TENANT
        | _OPERATIONS
        | {P.flow_internals, P.flow_register}
    ),
    # admin: everything, including keys and the audit log
    Role.admin: frozenset(Permission),
}


def allowed(principal: Principal, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[principal.role]


AUDIT_SCOPE_KEY = "pocketrun.audit"


@cache
def _checker(permission: Permission) -> Callable[..., Any]:
    # One dependency with no sub-dependencies: FastAPI's cost grows with each one.
    async def require(request: Request) -> Principal:
        principal = await current_principal(request)
        if permission not in ROLE_PERMISSIONS[principal.role]:
            reason = f"the {principal.role} role may not do {permission}"
            deny(request.scope, reason, principal=principal, permission=permission.value)
            raise Forbidden(reason)
        if permission.audit_action is not None:
            request.scope[AUDIT_SCOPE_KEY] = (principal, permission.audit_action)
        return principal

    require.__name__ = f"require_{permission.name}"
    require.permission = permission  # type: ignore[attr-defined]
    return require


def Requires(permission: Permission) -> Any:
    """``Annotated[Principal, Requires(Permission.run_start)]``: authenticated and allowed."""
    return Depends(_checker(permission))


def route_permission(route: APIRoute) -> Permission | None:
    """The permission a route declares (through ``Requires``), or None."""
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        found = getattr(dependant.call, "permission", None)
        if isinstance(found, Permission):
            return found
        stack.extend(dependant.dependencies)
    return None


def app_routes(app: FastAPI) -> Iterator[tuple[str, set[str], Any]]:
    """(full path, methods, route) of every route, through included routers (which newer
    FastAPI keeps lazily instead of copying their routes into ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        for route in app.routes:
            yield getattr(route, "path", ""), set(getattr(route, "methods", None) or ()), route
        return
    for context in iter_route_contexts(app.routes):
        yield context.path or "", set(context.methods or ()), context.original_route


def undeclared_routes(app: FastAPI) -> list[str]:
    """``/v1`` routes that declare no permission: each one is a bug."""
    return [
        f"{','.join(sorted(methods))} {path}"
        for path, methods, route in app_routes(app)
        if path.startswith("/v1")
        and (not isinstance(route, APIRoute) or route_permission(route) is None)
    ]


def can_see_run(principal: Principal, run: Mapping[str, Any]) -> bool:
    """A run the caller may not see answers 404, never 403."""
    if principal.cross_tenant:
        return True
    if run["tenant"] != principal.tenant:
        return False
    return principal.role is not Role.consumer or run["principal"] == principal.subject


def list_scope(principal: Principal) -> tuple[str | None, str | None]:
    """(tenant, principal) filters for listing runs; None means no filter."""
    tenant = None if principal.cross_tenant else principal.tenant
    subject = principal.subject if principal.role is Role.consumer else None
    return tenant, subject


def tenant_scope(principal: Principal) -> str | None:
    """The tenant filter for keys and audit entries; None for a cross-tenant admin."""
    return None if principal.cross_tenant else principal.tenant
