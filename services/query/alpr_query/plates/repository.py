"""SQL of `/v1/plates/{plate}`: one plate's totals, per-camera counts and newest sightings, all read in one
snapshot (a repeatable-read transaction) so the three parts agree. The `(plate, first_seen)` index serves
each part."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from alpr_query.db import Database
from alpr_query.events.repository import SUMMARY_COLUMNS

_SUMMARY = ", ".join(SUMMARY_COLUMNS)


@dataclass(frozen=True, slots=True)
class PlateRows:
    cameras: list[asyncpg.Record]
    sightings: list[asyncpg.Record]


_RANGE = "AND ($2::timestamptz IS NULL OR first_seen >= $2) AND ($3::timestamptz IS NULL OR first_seen < $3)"


class PlateRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def history(
        self, plate: str, *, since: datetime | None, until: datetime | None, limit: int
    ) -> PlateRows:
        where = f"WHERE plate = $1 {_RANGE}"
        async with (
            self.db.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            cameras = await conn.fetch(
                f"""SELECT camera_id, count(*) AS count, min(first_seen) AS first_seen,
                           max(last_seen) AS last_seen
                    FROM plate_events {where}
                    GROUP BY camera_id ORDER BY max(last_seen) DESC, camera_id""",  # noqa: S608 - constants
                plate,
                since,
                until,
            )
            sightings = (
                await conn.fetch(
                    f"""SELECT {_SUMMARY} FROM plate_events {where}
                        ORDER BY first_seen DESC, event_id DESC LIMIT $4""",  # noqa: S608
                    plate,
                    since,
                    until,
                    limit,
                )
                if cameras
                else []
            )
        return PlateRows(cameras=cameras, sightings=sightings)
