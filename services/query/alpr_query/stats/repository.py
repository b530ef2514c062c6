"""SQL of `/v1/stats/hourly`: the `plate_events_hourly` rollup (a table persist keeps current on plain
PostgreSQL; a continuous aggregate with the same columns on TimescaleDB), never a scan of the events."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from alpr_query.db import Database


class StatsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def hourly(
        self, start: datetime, end: datetime, cameras: list[str] | None, site: str | None
    ) -> list[asyncpg.Record]:
        return await self.db.pool.fetch(
            """SELECT h.bucket, h.camera_id, h.events, h.format_valid, h.watchlist_hits,
                      CASE WHEN h.events > 0 THEN h.confidence_sum / h.events END AS mean_confidence
               FROM plate_events_hourly h
               WHERE h.bucket >= date_trunc('hour', $1::timestamptz, 'UTC') AND h.bucket < $2
                 AND ($3::text[] IS NULL OR h.camera_id = ANY($3))
                 AND ($4::text IS NULL
                      OR h.camera_id IN (SELECT camera_id FROM cameras WHERE site_id = $4))
               ORDER BY h.bucket, h.camera_id""",
            start,
            end,
            cameras,
            site,
        )
