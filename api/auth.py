"""Who is calling: an API key or a JWT, both as ``Authorization: Bearer ...``.

There is no unauthenticated mode: a missing, malformed, unknown, revoked or expired
credential is 401 with ``WWW-Authenticate``. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import jwt
import structlog
from fastapi import Request

from api.auditing import Denial
from core.errors import Unauthorized, Unavailable
from core.metrics import KEY_LOOKUPS
from core.principal import ALL_TENANTS, Principal, Role
from core.settings import Settings
from core.text import unstorable
from db.keys import KeyRepository, hash_key, key_prefix, looks_like_key

log = structlog.get_logger("pocketrun.auth")

MAX_TOKEN_LENGTH = 8192
CACHE_MAX_ENTRIES = 10_000
JWKS_MIN_REFRESH = 30.0  # an unknown ``kid`` refetches the JWKS at most this often
PINNED = {"RSA": "RS256", ("EC", "P-256"): "ES256"}  # key type -> the one algorithm it may use


def unauthorized(detail: str, error: str = "invalid_token") -> Unauthorized:
    exc = Unauthorized(detail)
    challenge = 'Bearer realm="pocketrun"'
    if error:
        challenge += f', error="{error}"'
    exc.headers = {"WWW-Authenticate": challenge}  # type: ignore[attr-defined]
    return exc


# --- API keys ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Cached:
    fetched: float
    principal: Principal | None  # None: revoked
    expires_at: float | None  # epoch seconds


class KeyAuthenticator:
    """Key -> principal with one indexed query by hash, cached in-process for ``ttl`` seconds.

    A revocation through this process's API takes effect at once; one made elsewhere (the
    CLI, another API process) within ``ttl`` seconds. An unknown key is remembered as
    unknown for ``ttl`` seconds too, so repeating it costs no query; a key created through
    this process is forgotten from that list at once, and a key minted anywhere else has
    never been presented before, so a new key still works at once.
    """

    def __init__(self, keys: KeyRepository, ttl: float) -> None:
        self.keys = keys
        self.ttl = ttl
        self._cache: dict[str, _Cached] = {}
        self._unknown: dict[str, float] = {}  # digest -> when it was found unknown

    def cached(self, token: str) -> bool:
        """Whether authenticating ``token`` now would answer without a database query."""
        digest = hash_key(token)
        now = time.monotonic()
        entry = self._cache.get(digest)
        if entry is not None and now - entry.fetched <= self.ttl:
            return True
        seen = self._unknown.get(digest)
        return seen is not None and now - seen <= self.ttl

    async def authenticate(self, token: str) -> Principal:
        digest = hash_key(token)
        now = time.monotonic()
        entry = self._cache.get(digest)
        if entry is None or now - entry.fetched > self.ttl:
            seen = self._unknown.get(digest)
            if seen is not None and now - seen <= self.ttl:
                raise unauthorized("the API key is not valid")
            KEY_LOOKUPS.inc()
            row = await self.keys.lookup(token)
            if row is None:
                self._cache.pop(digest, None)
                if self.ttl > 0:
                    if len(self._unknown) >= CACHE_MAX_ENTRIES:
                        self._unknown.clear()
                    self._unknown[digest] = now
                raise unauthorized("the API key is not valid")
            self._unknown.pop(digest, None)
            principal = None
            if row["revoked_at"] is None:
                principal = Principal(
                    subject=f"key:{row['id']}",
                    tenant=row["tenant"],
                    role=Role(row["role"]),
                    key_id=row["id"],
                )
            expires = row["expires_at"].timestamp() if row["expires_at"] else None
            entry = _Cached(now, principal, expires)
            if self.ttl > 0:
                if len(self._cache) >= CACHE_MAX_ENTRIES:
                    self._cache.clear()
                self._cache[digest] = entry
        if entry.principal is None:
            raise unauthorized("the API key has been revoked")
        if entry.expires_at is not None and time.time() >= entry.expires_at:
            raise unauthorized("the API key has expired")
        return entry.principal

    def created(self, key: str) -> None:
        """A key was just stored through this process: it is not unknown any more."""
        self._unknown.pop(hash_key(key), None)

    def invalidate(self, key_id: str) -> None:
        for digest, entry in list(self._cache.items()):
            if entry.principal is not None and entry.principal.key_id == key_id:
                self._cache.pop(digest, None)


# --- JWT ----------------------------------------------------------------------------------


def parse_role_map(text: str | None) -> dict[str, Role]:
    """``{"group": "role"}`` as JSON, or ``group=role,group2=role``."""
    if not text or not text.strip():
        return {}
    text = text.strip()
    if text.startswith("{"):
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("POCKETRUN_JWT_ROLE_MAP must be a JSON object")
        pairs = list(raw.items())
    else:
        pairs = []
        for part in text.split(","):
            if not part.strip():
                continue
            group, sep, role = part.rpartition("=")
            if not sep or not group.strip():
                raise ValueError(f"POCKETRUN_JWT_ROLE_MAP entry {part!r} is not group=role")
            pairs.append((group.strip(), role.strip()))
    try:
        return {str(group): Role(str(role)) for group, role in pairs}
    except ValueError:
        raise ValueError(
            f"POCKETRUN_JWT_ROLE_MAP names a role that is not one of {[r.value for r in Role]}"
        ) from None


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by dotted path (``realm_access.roles``) when not found as is."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(slots=True)
class _Jwk:
    key: Any
    algorithm: str


class JWTVerifier:
    """HS256 against ``JWT_SECRET``; RS256/ES256 against ``JWKS_URL``. The algorithm comes
    from the key, never from the token alone: ``none`` and HS/RS confusion can't pass."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.jwks_url = settings.jwks_url
        if self.jwks_url and not self.jwks_url.startswith(("https://", "file://")):
            raise ValueError("POCKETRUN_JWKS_URL must be an https:// or file:// URL")
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.role_claim = settings.jwt_role_claim
        self.tenant_claim = settings.jwt_tenant_claim
        self.role_map = parse_role_map(settings.jwt_role_map)
        self.leeway = settings.jwt_leeway
        self.jwks_ttl = settings.jwks_cache_ttl
        self._keys: dict[str | None, _Jwk] = {}
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()
        required = ["exp", "sub"]
        if self.issuer:
            required.append("iss")
        if self.audience:
            required.append("aud")
        self._options = {"require": required}
        # Verified tokens, kept for at most AUTH_CACHE_TTL seconds and never past their exp.
        self.cache_ttl = settings.auth_cache_ttl
        self._verified: dict[str, tuple[float, float, Principal]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.jwks_url)

    async def verify(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            until, exp, principal = hit
            if time.monotonic() < until and time.time() < exp:
                return principal
            self._verified.pop(token, None)
        principal, exp = await self._verify(token)
        if self.cache_ttl > 0:
            if len(self._verified) >= CACHE_MAX_ENTRIES:
                self._verified.clear()
            self._verified[token] = (time.monotonic() + self.cache_ttl, exp, principal)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("the bearer token is not valid") from None
        alg = header.get("alg")
        if alg == "HS256" and self.secret:
            key: Any = self.secret
        elif alg in ("RS256", "ES256") and self.jwks_url:
            jwk = await self._key(header.get("kid"))
            if jwk is None or jwk.algorithm != alg:
                raise unauthorized("the token's signing key is not known")
            key = jwk.key
        else:
            raise unauthorized("the token's algorithm is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.PyJWTError:
            raise unauthorized("the token is not valid") from None
        return self._principal(claims), float(claims["exp"]) + self.leeway

    def _principal(self, claims: dict[str, Any]) -> Principal:
        # Both are stored with every run and audit entry: text no database can keep makes
        # the token unusable (401, like any other unusable claim), never a 500 later.
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 190:
            raise unauthorized("the token has no usable subject")
        if (reason := unstorable(sub)) is not None:
            raise unauthorized(f"the token's subject is not usable: {reason}")
        tenant = _claim(claims, self.tenant_claim)
        if not isinstance(tenant, str) or not tenant or len(tenant) > 100 or tenant == ALL_TENANTS:
            raise unauthorized("the token has no usable tenant claim")
        if (reason := unstorable(tenant)) is not None:
            raise unauthorized(f"the token's tenant claim is not usable: {reason}")
        raw = _claim(claims, self.role_claim)
        values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles: list[Role] = []
        for value in values:
            if not isinstance(value, str):
                continue
            if self.role_map:
                # With a map, only mapped groups grant a role.
                if value in self.role_map:
                    roles.append(self.role_map[value])
            elif value in Role.__members__:
                roles.append(Role(value))
        if not roles:
            raise unauthorized("the token grants no pocketrun role")
        role = max(roles, key=lambda r: r.rank)
        return Principal(subject=f"jwt:{sub}", tenant=tenant, role=role)

    async def _key(self, kid: str | None) -> _Jwk | None:
        now = time.monotonic()
        stale = now - self._fetched > self.jwks_ttl
        unknown = kid not in self._keys and not (kid is None and len(self._keys) == 1)
        if stale or (unknown and now - self._fetched > JWKS_MIN_REFRESH):
            async with self._lock:
                if self._fetched <= now:  # nobody refreshed while this one waited
                    await self._refresh()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        try:
            document = await self._fetch()
            keys: dict[str | None, _Jwk] = {}
            for raw in document.get("keys", []):
                parsed = _parse_jwk(raw)
                if parsed is not None:
                    keys[raw.get("kid")] = parsed
        except Exception as exc:
            # Keep the last good keys and try again a little later.
            log.warning("JWKS fetch failed", error=type(exc).__name__)
            self._fetched = time.monotonic() - max(self.jwks_ttl - JWKS_MIN_REFRESH, 0)
            if not self._keys:
                raise Unavailable("the token signing keys can't be loaded") from None
            return
        self._keys = keys
        self._fetched = time.monotonic()

    async def _fetch(self) -> dict[str, Any]:
        assert self.jwks_url is not None
        if self.jwks_url.startswith("file://"):
            path = Path(unquote(urlparse(self.jwks_url).path))
            return json.loads(await asyncio.to_thread(path.read_text))
        async with httpx.AsyncClient(timeout=5, follow_redirects=False) as client:
            response = await client.get(self.jwks_url)
            response.raise_for_status()
            return response.json()


def _parse_jwk(raw: dict[str, Any]) -> _Jwk | None:
    """Accept RSA keys for RS256 and P-256 keys for ES256 only; skip anything else."""
    if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
        return None
    kty = raw.get("kty")
    algorithm = PINNED.get(kty) if kty == "RSA" else PINNED.get((kty, raw.get("crv")))
    if algorithm is None or raw.get("alg", algorithm) != algorithm:
        return None
    try:
        return _Jwk(jwt.PyJWK(raw, algorithm).key, algorithm)
    except jwt.PyJWTError:
        return None


# --- the caller ---------------------------------------------------------------------------


class Authenticator:
    def __init__(self, settings: Settings, keys: KeyRepository) -> None:
        self.keys = KeyAuthenticator(keys, settings.auth_cache_ttl)
        self.jwt = JWTVerifier(settings)

    def needs_lookup(self, token: str) -> bool:
        """Whether ``token`` would cost a database query (an API key not cached either way)."""
        if not looks_like_key(token) or len(token) > MAX_TOKEN_LENGTH:
            return False
        return not self.keys.cached(token)

    async def authenticate(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_LENGTH:
            raise unauthorized("the bearer token is not valid")
        if looks_like_key(token):
            return await self.keys.authenticate(token)
        if self.jwt.enabled and token.count(".") == 2:
            return await self.jwt.verify(token)
        raise unauthorized("the bearer token is not valid")


PRINCIPAL_SCOPE_KEY = "pocketrun.principal"
DENIED_SCOPE_KEY = "pocketrun.denied"


def deny(
    scope: dict[str, Any],
    reason: str,
    *,
    principal: Principal | None = None,
    credential: str | None = None,
    permission: str | None = None,
) -> None:
    """Note a refused call for the audit log (``api.hardening`` writes it as the 401 or
    403 goes out). Of a credential, only an API key's public prefix is kept."""
    scope[DENIED_SCOPE_KEY] = Denial(
        reason=reason,
        principal=principal,
        key_prefix=key_prefix(credential) if credential and looks_like_key(credential) else None,
        permission=permission,
    )


def bearer_token(authorization: str | None) -> str | None:
    """The credential of ``Authorization: Bearer <credential>``, or None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    return credential if credential and scheme.lower() == "bearer" else None


async def current_principal(request: Request) -> Principal:
    """The authenticated caller, rate limited; 401 (or 429 for floods) otherwise. Resolved
    once per request: later calls in the same request get the same principal."""
    scope = request.scope
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is not None:
        return principal
    security = scope["app"].state.security
    token = bearer_token(_authorization(scope))
    if token is None:
        await security.limit_anonymous(request)
        exc = unauthorized("credentials are required: Authorization: Bearer <key or JWT>", "")
        deny(scope, exc.detail)
        raise exc
    if security.limiter is not None and security.authenticator.needs_lookup(token):
        # A client over its failed-call budget is refused before its key costs a query.
        await security.check_anonymous(request)
    try:
        principal = await security.authenticator.authenticate(token)
    except Unauthorized as exc:
        await security.limit_anonymous(request)
        deny(scope, exc.detail, credential=token)
        raise
    await security.limit_principal(request, principal)
    scope[PRINCIPAL_SCOPE_KEY] = principal
    return principal


def _authorization(scope: dict[str, Any]) -> str | None:
    """The first ``Authorization`` header, as ``HTTPBearer`` reads it."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            return value.decode("latin-1")
    return None
