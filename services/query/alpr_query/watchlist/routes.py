"""`/v1/watchlist`: list and read (scope read), create, replace and delete (scope write). Every change is
stored, then published to the edge (`WatchlistPublisher`)."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
from litestar import delete, get, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from alpr_query import params
from alpr_query.errors import NOT_FOUND, TOO_LARGE, V1_RESPONSES, NotFound
from alpr_query.params import PathId
from alpr_query.watchlist.publisher import Outcome, WatchlistPublisher
from alpr_query.watchlist.repository import EntryData, WatchlistRepository
from alpr_query.watchlist.schemas import WatchlistEntryIn, WatchlistEntryOut, WatchlistList


def entry_out(row: asyncpg.Record, published: Outcome) -> WatchlistEntryOut:
    return WatchlistEntryOut(
        entry_id=row["entry_id"],
        plate=row["plate"],
        label=row["label"],
        match=row["match"],
        max_distance=row["max_distance"],
        note=row["note"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        published=published,
    )


def _state(row: asyncpg.Record, publisher: WatchlistPublisher) -> Outcome:
    if not publisher.enabled:
        return "disabled"
    return "sent" if row["published_at"] == row["updated_at"] else "pending"


def _data(body: WatchlistEntryIn) -> EntryData:
    return EntryData(
        plate=params.plate("plate", body.plate),
        label=params.text("label", body.label),
        match=body.match,
        max_distance=body.max_distance,
        note=body.note,
    )


def handlers(repo: WatchlistRepository, publisher: WatchlistPublisher) -> list[HTTPRouteHandler]:
    write_responses: dict[int, Any] = {**V1_RESPONSES, **TOO_LARGE}

    @get(
        "/v1/watchlist",
        opt={"scope": "read"},
        responses=V1_RESPONSES,
        tags=["watchlist"],
    )
    async def list_entries() -> WatchlistList:
        """Every live watchlist entry."""
        return WatchlistList(items=[entry_out(r, _state(r, publisher)) for r in await repo.live()])

    @get(
        "/v1/watchlist/{entry_id:str}",
        opt={"scope": "read"},
        responses={**V1_RESPONSES, **NOT_FOUND},
        tags=["watchlist"],
    )
    async def get_entry(entry_id: PathId) -> WatchlistEntryOut:
        """One watchlist entry."""
        row = await repo.get(params.identifier("entry_id", entry_id))
        if row is None:
            raise NotFound(detail=f"no watchlist entry {entry_id!r}")
        return entry_out(row, _state(row, publisher))

    @post(
        "/v1/watchlist",
        opt={"scope": "write"},
        responses=write_responses,
        status_code=HTTP_201_CREATED,
        tags=["watchlist"],
    )
    async def create_entry(data: JSONBody[WatchlistEntryIn]) -> WatchlistEntryOut:
        """Add a watched plate under a new id; the edge is told through the watchlist topic."""
        values = _data(data)
        row = None
        while row is None:  # a generated id that collides (never seen, but cheap to handle) is redrawn
            row = await repo.create(f"wl-{secrets.token_hex(8)}", values)
        outcome = await publisher.publish(row["entry_id"])
        return entry_out(row, outcome)

    @put(
        "/v1/watchlist/{entry_id:str}",
        opt={"scope": "write"},
        responses=write_responses,
        status_code=HTTP_200_OK,
        tags=["watchlist"],
    )
    async def put_entry(entry_id: PathId, data: JSONBody[WatchlistEntryIn]) -> WatchlistEntryOut:
        """Create or replace the entry with this id (ids: letters, digits, `_ . : -`)."""
        row, _created = await repo.put(params.identifier("entry_id", entry_id), _data(data))
        outcome = await publisher.publish(row["entry_id"])
        return entry_out(row, outcome)

    @delete(
        "/v1/watchlist/{entry_id:str}",
        opt={"scope": "write"},
        responses={**V1_RESPONSES, **NOT_FOUND},
        status_code=HTTP_200_OK,
        tags=["watchlist"],
    )
    async def delete_entry(entry_id: PathId) -> WatchlistEntryOut:
        """Remove the entry (answered with the entry as it was); the edge receives a tombstone for its id."""
        row = await repo.delete(params.identifier("entry_id", entry_id))
        if row is None:
            raise NotFound(detail=f"no watchlist entry {entry_id!r}")
        outcome = await publisher.publish(row["entry_id"])
        return entry_out(row, outcome)

    return [list_entries, get_entry, create_entry, put_entry, delete_entry]
