"""SQL of the watchlist: `watchlist_entries` is the source of truth; a change is stored first and then
published. Deletion is soft (`deleted_at`), so the tombstone can still be published after an outage.
`published_at` holds the `updated_at` of the version the broker acknowledged (migration 0004)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from alpr_query.db import Database

_COLUMNS = (
    "entry_id, plate, label, match, max_distance, note, created_at, updated_at, deleted_at, published_at"
)


@dataclass(frozen=True, slots=True)
class EntryData:
    plate: str
    label: str
    match: str
    max_distance: int
    note: str


class WatchlistRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def live(self) -> list[asyncpg.Record]:
        return await self.db.pool.fetch(
            f"SELECT {_COLUMNS} FROM watchlist_entries WHERE deleted_at IS NULL ORDER BY entry_id"  # noqa: S608
        )

    async def get(self, entry_id: str, *, deleted: bool = False) -> asyncpg.Record | None:
        """The entry; a deleted one only with `deleted=True` (the publisher needs its tombstone)."""
        return await self.db.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM watchlist_entries WHERE entry_id = $1 AND ($2 OR deleted_at IS NULL)",  # noqa: S608
            entry_id,
            deleted,
        )

    async def create(self, entry_id: str, data: EntryData) -> asyncpg.Record | None:
        """Insert a new entry; None if the id is taken by a live entry."""
        return await self.db.pool.fetchrow(
            f"""INSERT INTO watchlist_entries AS w (entry_id, plate, label, match, max_distance, note)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (entry_id) DO UPDATE SET
                    plate = EXCLUDED.plate, label = EXCLUDED.label, match = EXCLUDED.match,
                    max_distance = EXCLUDED.max_distance, note = EXCLUDED.note,
                    created_at = now(), updated_at = now(), deleted_at = NULL
                WHERE w.deleted_at IS NOT NULL
                RETURNING {_COLUMNS}""",  # noqa: S608
            entry_id,
            data.plate,
            data.label,
            data.match,
            data.max_distance,
            data.note,
        )

    async def put(self, entry_id: str, data: EntryData) -> tuple[asyncpg.Record, bool]:
        """Create or replace; returns the row and whether it was created (or brought back from deletion)."""
        row = await self.db.pool.fetchrow(
            f"""WITH before AS (SELECT deleted_at FROM watchlist_entries WHERE entry_id = $1)
                INSERT INTO watchlist_entries AS w (entry_id, plate, label, match, max_distance, note)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (entry_id) DO UPDATE SET
                    plate = EXCLUDED.plate, label = EXCLUDED.label, match = EXCLUDED.match,
                    max_distance = EXCLUDED.max_distance, note = EXCLUDED.note,
                    created_at = CASE WHEN w.deleted_at IS NULL THEN w.created_at ELSE now() END,
                    updated_at = now(), deleted_at = NULL
                RETURNING {_COLUMNS},
                    NOT EXISTS (SELECT 1 FROM before WHERE deleted_at IS NULL) AS created""",  # noqa: S608
            entry_id,
            data.plate,
            data.label,
            data.match,
            data.max_distance,
            data.note,
        )
        assert row is not None  # noqa: S101 - an upsert … RETURNING always returns its row
        return row, bool(row["created"])

    async def delete(self, entry_id: str) -> asyncpg.Record | None:
        """Mark the entry deleted; None if there is no live entry with that id."""
        return await self.db.pool.fetchrow(
            f"""UPDATE watchlist_entries SET deleted_at = now(), updated_at = now()
                WHERE entry_id = $1 AND deleted_at IS NULL RETURNING {_COLUMNS}""",  # noqa: S608
            entry_id,
        )

    async def unpublished(self, limit: int) -> list[str]:
        """Ids of entries whose latest version the broker has not acknowledged, oldest change first."""
        rows = await self.db.pool.fetch(
            """SELECT entry_id FROM watchlist_entries WHERE published_at IS DISTINCT FROM updated_at
               ORDER BY updated_at LIMIT $1""",
            limit,
        )
        return [r["entry_id"] for r in rows]

    async def mark_published(self, entry_id: str, version: datetime) -> bool:
        """Record that `version` was acknowledged; False when the entry changed again meanwhile."""
        status = await self.db.pool.execute(
            "UPDATE watchlist_entries SET published_at = $2 WHERE entry_id = $1 AND updated_at = $2",
            entry_id,
            version,
        )
        return status.endswith(" 1")
