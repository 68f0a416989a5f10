"""The audit entry for a call, built in one place for both writers of it: ``api.hardening``
(after any successful mutating call, as the response starts) and ``create_run`` (which
writes it in the new run's own transaction when it already knows the response)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from db.audit import AuditRecord

Scope = dict[str, Any]


def audit_record(
    scope: Scope, intent: tuple[Any, str], status: int, headers: Mapping[bytes, bytes]
) -> AuditRecord:
    """``intent`` is ``(principal, action)`` as ``api.authz`` leaves it in the scope;
    ``headers`` the response's (``location`` names the target, ``idempotent-replayed``)."""
    principal, action = intent
    params = scope.get("path_params") or {}
    location = headers.get(b"location")
    if location:
        target = location.decode("latin-1").rstrip("/").rsplit("/", 1)[-1]
    else:
        target = params.get("run_id") or params.get("key_id") or params.get("flow")
    detail: dict[str, Any] = {"method": scope["method"], "path": scope["path"][:500]}
    if "flow" in params:
        detail["flow"] = params["flow"]
    if headers.get(b"idempotent-replayed") == b"true":
        detail["replayed"] = True
    return AuditRecord(
        tenant=principal.tenant,
        principal=principal.subject,
        role=str(principal.role),
        action=action,
        target=target,
        status=status,
        request_id=structlog.contextvars.get_contextvars().get("request_id"),
        detail=detail,
    )
