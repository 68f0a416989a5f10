"""One place that decides what a principal may see and do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.principal import Principal, Role


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
