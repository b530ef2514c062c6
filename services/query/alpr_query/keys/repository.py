"""API keys in the `api_keys` table: only a hash of each key is stored; the key is shown once, at creation.

A key looks like `alpr_<key id>_<secret>`: the id lets an operator tell keys apart (`alpr keys list`,
revocation) without the secret; the secret is 32 random bytes. Because keys are random and long, one
SHA-256 is the right hash (a password hash such as bcrypt protects low-entropy secrets, and would cost
milliseconds on every uncached request). The lookup is by hash, so a wrong key never touches a stored one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from alpr_query.db import Database, FairPool

if TYPE_CHECKING:
    import asyncpg

KEY_PREFIX = "alpr_"
SCOPES = ("read", "write", "admin")
# Each scope includes those before it: admin can write and read, write can read.
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
SHOWN_PREFIX_CHARS = 14


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = secrets.token_hex(5)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def allows(scopes: tuple[str, ...] | frozenset[str], needed: str) -> bool:
    """Whether a key with `scopes` may use a route that needs `needed`."""
    want = _RANK[needed]
    return any(_RANK.get(s, -1) >= want for s in scopes)


def normalise_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; choose from {list(SCOPES)}")
    if not scopes:
        raise ValueError(f"at least one scope is needed, from {list(SCOPES)}")
    return tuple(s for s in SCOPES if s in scopes)


_COLUMNS = "key_id, name, prefix, scopes, created_at, expires_at, last_used_at, revoked_at"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class KeyRepository:
    """Reads and writes `api_keys` through a pool (or any object with asyncpg's fetch methods)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> FairPool:
        return self._db.pool

    async def create(
        self, name: str, scopes: list[str] | tuple[str, ...], expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it and the key itself (shown once, never stored)."""
        chosen = normalise_scopes(scopes)
        key_id, key = new_key()
        row = await self.db.fetchrow(
            f"""INSERT INTO api_keys (key_id, name, prefix, key_hash, scopes, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}""",  # noqa: S608 - a constant
            key_id,
            name,
            key[:SHOWN_PREFIX_CHARS],
            hash_key(key),
            list(chosen),
            expires_at,
        )
        assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
        return _key(row), key

    async def all(self, *, include_revoked: bool = True) -> list[ApiKey]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at, key_id",  # noqa: S608
            include_revoked,
        )
        return [_key(r) for r in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)  # noqa: S608
        return None if row is None else _key(row)

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key (idempotent: the first revocation time is kept); None if there is no such key."""
        row = await self.db.fetchrow(
            f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1
                RETURNING {_COLUMNS}""",  # noqa: S608
            key_id,
        )
        return None if row is None else _key(row)

    async def authenticate(self, key: str) -> ApiKey | None:
        """The usable key with this value (not revoked, not expired), marking it used; None otherwise."""
        row = await self.db.fetchrow(
            f"""UPDATE api_keys SET last_used_at = now()
                WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                RETURNING {_COLUMNS}""",  # noqa: S608
            hash_key(key),
        )
        return None if row is None else _key(row)
