"""API keys: minted here, stored as SHA-256, looked up by hash with one indexed query.

Keys are ``prk_`` + 43 URL-safe characters (32 random bytes): high entropy, so a fast
hash is enough, and the prefix lets a leak scanner recognise them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from core.errors import InvalidInput
from core.principal import Role
from db.models import api_keys
from db.store import RunStore
from db.types import utcnow

KEY_PREFIX = "prk_"
MIN_KEY_LENGTH = 32  # a seeded ADMIN_KEY must be at least this long
BOOTSTRAP_TENANT = "default"

PUBLIC_COLUMNS = [
    api_keys.c.id,
    api_keys.c.prefix,
    api_keys.c.name,
    api_keys.c.tenant,
    api_keys.c.role,
    api_keys.c.created_at,
    api_keys.c.created_by,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """The public start of a key, stored and listed to tell keys apart."""
    return key[: len(KEY_PREFIX) + 6]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


@dataclass(slots=True)
class NewKey:
    name: str
    tenant: str
    role: Role
    created_by: str
    expires_at: datetime | None = None


class KeyRepository:
    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.db = store.sa

    async def create(self, new: NewKey, *, secret: str | None = None) -> tuple[RowMapping, str]:
        """Store a key; returns its row and the key itself (the only time it is seen)."""
        key = secret or new_key()
        row = await self._insert(new, key)
        return row, key

    async def _insert(self, new: NewKey, key: str, conn=None) -> RowMapping:
        now = utcnow()
        values = {
            "id": secrets.token_hex(8),
            "key_hash": hash_key(key),
            "prefix": key_prefix(key),
            "name": new.name,
            "tenant": new.tenant,
            "role": Role(new.role).value,
            "created_at": now,
            "created_by": new.created_by,
            "expires_at": new.expires_at,
            "revoked_at": None,
        }
        if conn is None:
            async with self.db.write() as conn:
                await conn.execute(insert(api_keys).values(values))
        else:
            await conn.execute(insert(api_keys).values(values))
        return {k: values[k] for k in (c.name for c in PUBLIC_COLUMNS)}  # type: ignore[return-value]

    async def lookup(self, key: str) -> RowMapping | None:
        """The key's row by hash (revoked and expired ones too: the caller decides)."""
        query = select(*PUBLIC_COLUMNS).where(api_keys.c.key_hash == hash_key(key))
        async with self.db.read() as conn:
            return (await conn.execute(query)).mappings().first()

    async def get(self, key_id: str) -> RowMapping | None:
        async with self.db.read() as conn:
            query = select(*PUBLIC_COLUMNS).where(api_keys.c.id == key_id)
            return (await conn.execute(query)).mappings().first()

    async def list(
        self, tenant: str | None, *, limit: int = 100, before_id: str | None = None
    ) -> list[RowMapping]:
        """Keys newest first (ids are random, so order by creation time then id). A
        ``before_id`` outside ``tenant`` is as unknown as one that does not exist."""
        query = select(*PUBLIC_COLUMNS)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if before_id is not None:
            anchor = await self._anchor(before_id, tenant)
            if anchor is None:
                return []
            query = query.where(
                (api_keys.c.created_at < anchor["created_at"])
                | ((api_keys.c.created_at == anchor["created_at"]) & (api_keys.c.id < before_id))
            )
        query = query.order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return list((await conn.execute(query)).mappings().all())

    async def _anchor(self, key_id: str, tenant: str | None) -> RowMapping | None:
        query = select(api_keys.c.created_at).where(api_keys.c.id == key_id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        async with self.db.read() as conn:
            return (await conn.execute(query)).mappings().first()

    async def revoke(self, key_id: str) -> RowMapping | None:
        async with self.db.write() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            query = select(*PUBLIC_COLUMNS).where(api_keys.c.id == key_id)
            return (await conn.execute(query)).mappings().first()

    async def count(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar())

    async def bootstrap(self, admin_key: str | None) -> str | None:
        """Make sure someone can log in.

        With ``admin_key`` (``POCKETRUN_ADMIN_KEY``): store exactly that key as an admin of
        tenant ``default`` unless it is already stored (revoked stays revoked). Without it and
        with no keys at all: mint an admin key and return it so the caller can print it once.
        Safe when several processes start at once.
        """
        if admin_key is not None and (
            not looks_like_key(admin_key) or len(admin_key) < MIN_KEY_LENGTH
        ):
            raise InvalidInput(
                f"POCKETRUN_ADMIN_KEY must start with {KEY_PREFIX!r} and be at least "
                f"{MIN_KEY_LENGTH} characters long"
            )
        try:
            async with self.db.write() as conn:
                await self.store.serialize(conn, "pocketrun-bootstrap")
                if admin_key is not None:
                    found = await conn.execute(
                        select(api_keys.c.id).where(api_keys.c.key_hash == hash_key(admin_key))
                    )
                    if found.first() is None:
                        await self._insert(
                            _bootstrap_key("admin (POCKETRUN_ADMIN_KEY)"), admin_key, conn
                        )
                    return None
                total = (await conn.execute(select(func.count()).select_from(api_keys))).scalar()
                if total:
                    return None
                key = new_key()
                await self._insert(_bootstrap_key("admin (first start)"), key, conn)
                return key
        except IntegrityError:
            return None  # another process seeded the same key first


def _bootstrap_key(name: str) -> NewKey:
    return NewKey(name=name, tenant=BOOTSTRAP_TENANT, role=Role.admin, created_by="bootstrap")
