"""What the API holds for authentication, rate limits and the audit log."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from fastapi import Request

from api.auditing import DenialBudget
from api.auth import Authenticator
from api.ratelimit import Headers, RateLimiter
from core.principal import Principal
from core.settings import Settings
from db.audit import AuditRepository
from db.keys import KeyRepository
from db.store import RunStore

HEADERS_SCOPE_KEY = "pocketrun.headers"


@dataclass
class SecurityState:
    settings: Settings
    keys: KeyRepository
    audit: AuditRepository
    authenticator: Authenticator
    limiter: RateLimiter | None = None
    denials: DenialBudget = field(default_factory=DenialBudget)
    extra: dict = field(default_factory=dict)

    async def limit_principal(self, request: Request, principal: Principal) -> None:
        if self.limiter is not None:
            _add_headers(
                request, await self.limiter.hit(f"p:{principal.tenant}:{principal.subject}")
            )

    async def limit_anonymous(self, request: Request) -> None:
        if self.limiter is not None:
            _add_headers(request, await self.limiter.hit(_client(request)))

    async def check_anonymous(self, request: Request) -> None:
        """429 for a client that used up its budget of calls without valid credentials."""
        if self.limiter is not None:
            await self.limiter.check(_client(request))


def _client(request: Request) -> str:
    return f"ip:{request.client.host if request.client else 'unknown'}"


def _add_headers(request: Request, headers: Headers) -> None:
    if headers:
        request.scope.setdefault(HEADERS_SCOPE_KEY, []).extend(headers)


async def start_security(settings: Settings, store: RunStore) -> SecurityState:
    """Seed or mint the first admin key, build the authenticator and the limiter."""
    keys = KeyRepository(store)
    seeded = settings.admin_key.get_secret_value() if settings.admin_key else None
    minted = await keys.bootstrap(seeded)
    if minted is not None:
        # Printed once, to stdout only (never to the log): the only copy there will be.
        sys.stdout.write(
            "\n"
            "pocketrun: no API keys existed, so an admin key for tenant 'default' was created.\n"
            "It is shown only this once; keep it safe:\n\n"
            f"    {minted}\n\n"
            f"    curl -H 'Authorization: Bearer {minted}' "
            f"http://{settings.host}:{settings.port}/v1/flows\n\n"
        )
        sys.stdout.flush()
    limiter = RateLimiter(settings.rate_limit, settings.redis_url) if settings.rate_limit else None
    return SecurityState(
        settings=settings,
        keys=keys,
        audit=AuditRepository(store),
        authenticator=Authenticator(settings, keys),
        limiter=limiter,
    )
