"""Who is calling: every request and every run carries one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    consumer = "consumer"
    operator = "operator"
    engineer = "engineer"
    admin = "admin"

    @property
    def rank(self) -> int:
        """Higher is more powerful; picks one role when a token carries several."""
        return _RANK[self]


_RANK = {Role.consumer: 0, Role.operator: 1, Role.engineer: 2, Role.admin: 3}

ALL_TENANTS = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    tenant: str
    role: Role
    key_id: str | None = None

    @property
    def cross_tenant(self) -> bool:
        return self.tenant == ALL_TENANTS and self.role is Role.admin


# The CLI acts on the database directly, as this principal; the API never uses it.
LOCAL_PRINCIPAL = Principal(subject="local", tenant="default", role=Role.admin)
