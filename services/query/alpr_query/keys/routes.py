"""`/v1/keys` (scope admin): list, create and revoke API keys; `alpr keys` does the same from a shell."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from litestar import get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from alpr_query import params
from alpr_query.errors import NOT_FOUND, TOO_LARGE, V1_RESPONSES, BadParameter, NotFound
from alpr_query.keys.repository import ApiKey, KeyRepository
from alpr_query.keys.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyList, ApiKeyOut
from alpr_query.params import PathId
from alpr_query.security import KeyCache


def key_out(key: ApiKey) -> ApiKeyOut:
    values = dataclasses.asdict(key)
    values["scopes"] = list(key.scopes)
    return ApiKeyOut(**values)


def handlers(repo: KeyRepository, cache: KeyCache) -> list[HTTPRouteHandler]:
    @get("/v1/keys", opt={"scope": "admin"}, responses=V1_RESPONSES, tags=["keys"])
    async def list_keys(
        revoked: Annotated[bool, Parameter(description="Include revoked keys")] = False,
    ) -> ApiKeyList:
        """API keys (never the keys themselves)."""
        return ApiKeyList(items=[key_out(k) for k in await repo.all(include_revoked=revoked)])

    @post(
        "/v1/keys",
        opt={"scope": "admin"},
        responses={**V1_RESPONSES, **TOO_LARGE},
        status_code=HTTP_201_CREATED,
        tags=["keys"],
    )
    async def create_key(data: JSONBody[ApiKeyIn]) -> ApiKeyCreated:
        """A new API key; the answer holds the key itself, which is shown only this once."""
        expires = params.time("expires_at", data.expires_at)
        name = params.text("name", data.name) if data.name else ""
        try:
            key, secret = await repo.create(name, list(dict.fromkeys(data.scopes)), expires)
        except ValueError as exc:
            raise BadParameter("scopes", str(exc)) from None
        return ApiKeyCreated(**{**dataclasses.asdict(key), "scopes": list(key.scopes)}, key=secret)

    @post(
        "/v1/keys/{key_id:str}/revoke",
        opt={"scope": "admin"},
        responses={**V1_RESPONSES, **NOT_FOUND},
        status_code=HTTP_200_OK,
        tags=["keys"],
    )
    async def revoke_key(key_id: PathId) -> ApiKeyOut:
        """Revoke a key: requests with it are refused (401) from now on."""
        key = await repo.revoke(params.identifier("key_id", key_id))
        if key is None:
            raise NotFound(detail=f"no API key {key_id!r}")
        cache.forget()
        return key_out(key)

    return [list_keys, create_key, revoke_key]
