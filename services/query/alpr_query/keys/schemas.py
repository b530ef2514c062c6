"""API keys as `/v1/keys` shows them: never the key itself, except once in the creation answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Scope = Literal["read", "write", "admin"]


class ApiKeyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: ["read"]
    )
    expires_at: datetime | None = None


class ApiKeyOut(msgspec.Struct, kw_only=True):
    key_id: str
    name: str
    # The first characters of the key, to recognise it; the rest is known only to its holder.
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut, kw_only=True):
    # The key: shown this once and never again (only its hash is stored).
    key: str


class ApiKeyList(msgspec.Struct, kw_only=True):
    items: list[ApiKeyOut]
