"""SQL of `/v1/cameras`: the cameras table, with each camera's events of the last hour counted on the
`(camera_id, first_seen)` index (one index range per camera; the partition of today and yesterday)."""

from __future__ import annotations

import asyncpg

from alpr_query.db import Database


class CameraRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self, site: str | None) -> list[asyncpg.Record]:
        return await self.db.pool.fetch(
            """SELECT c.camera_id, c.site_id, c.name, c.latitude, c.longitude, c.direction,
                      c.first_event_at, c.last_event_at,
                      (SELECT count(*) FROM plate_events e
                       WHERE e.camera_id = c.camera_id AND e.first_seen >= now() - interval '1 hour'
                      ) AS events_last_hour
               FROM cameras c
               WHERE $1::text IS NULL OR c.site_id = $1
               ORDER BY c.site_id, c.camera_id""",
            site,
        )
