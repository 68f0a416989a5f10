"""Who is calling. Until credentials exist every call is the local principal."""

from __future__ import annotations

from core.principal import LOCAL_PRINCIPAL, Principal


async def current_principal() -> Principal:
    return LOCAL_PRINCIPAL
