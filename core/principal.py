"""Who is calling: every request and every run carries one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    consumer = "consumer"
    operator = "operator"
    engineer = "engineer"
    admin = "admin"


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


LOCAL_PRINCIPAL = Principal(subject="local", tenant="default", role=Role.admin)
