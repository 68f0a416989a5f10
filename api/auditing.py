"""The audit entry for a call, built in one place for both writers of it: ``api.hardening``
(after any successful mutating call, and after a refused one, as the response starts) and
``create_run`` (which writes it in the new run's own transaction when it already knows
the response)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from core.ids import parse_uuid
from core.principal import ALL_TENANTS, Principal
from db.audit import AuditRecord

Scope = dict[str, Any]
ANONYMOUS = "anonymous"


def audit_record(
    scope: Scope, intent: tuple[Any, str], status: int, headers: Mapping[bytes, bytes]
) -> AuditRecord:
    """``intent`` is ``(principal, action)`` as ``api.authz`` leaves it in the scope;
    ``headers`` the response's (``location`` names the target, ``idempotent-replayed``)."""
    principal, action = intent
    location = headers.get(b"location")
    if location:
        target = location.decode("latin-1").rstrip("/").rsplit("/", 1)[-1]
    else:
        target = _target(scope)
    detail = _detail(scope)
    if headers.get(b"idempotent-replayed") == b"true":
        detail["replayed"] = True
    return AuditRecord(
        tenant=principal.tenant,
        principal=principal.subject,
        role=str(principal.role),
        action=action,
        target=target,
        status=status,
        request_id=_request_id(),
        detail=detail,
    )


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused call, as ``api.auth`` and ``api.authz`` note it in the scope."""

    reason: str
    principal: Principal | None = None  # None: no valid credential (401)
    key_prefix: str | None = None  # the public prefix of the API key presented
    permission: str | None = None  # what a 403 lacked


def denial_record(scope: Scope, denial: Denial, status: int) -> AuditRecord:
    """The entry for a 401 or 403. A caller with no valid credential has no tenant: its
    entries are under tenant ``*``, seen by cross-tenant admins only."""
    detail = {**_detail(scope), "reason": denial.reason[:200]}
    client = scope.get("client")
    if client:
        detail["client"] = str(client[0])[:100]
    if denial.key_prefix is not None:
        detail["key_prefix"] = denial.key_prefix
    if denial.permission is not None:
        detail["permission"] = denial.permission
    principal = denial.principal
    return AuditRecord(
        tenant=principal.tenant if principal else ALL_TENANTS,
        principal=principal.subject if principal else ANONYMOUS,
        role=str(principal.role) if principal else "none",
        action="access.denied" if status == 403 else "auth.denied",
        target=_target(scope),
        status=status,
        request_id=_request_id(),
        detail=detail,
    )


class DenialBudget:
    """At most ``rate`` refused calls a second (bursts up to ``burst``) are audited per
    process: a flood of bad credentials must not become a flood of writes. Past it, they
    are counted in ``pocketrun_audit_denials_dropped_total`` instead."""

    def __init__(self, rate: float = 20.0, burst: float = 100.0) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _target(scope: Scope) -> str | None:
    """What the call acted on; a run id in its canonical spelling, however it was written
    (``urn:uuid:...``, braces, upper case)."""
    params = scope.get("path_params") or {}
    run_id = params.get("run_id")
    if run_id is not None:
        parsed = parse_uuid(run_id)
        return str(parsed) if parsed is not None else run_id
    return params.get("key_id") or params.get("flow")


def _detail(scope: Scope) -> dict[str, Any]:
    params = scope.get("path_params") or {}
    detail: dict[str, Any] = {"method": scope["method"], "path": scope["path"][:500]}
    if "flow" in params:
        detail["flow"] = params["flow"]
    return detail


def _request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")
