"""SQL of `/v1/plates/{plate}`: one plate's per-camera counts and newest sightings in one statement (one
snapshot, one round trip: no transaction needed for the parts to agree). The `(plate, first_seen)` index
serves it.

The statement reads every sighting of the plate (the counts need them all) and returns the newest `limit`
of them (`listed`) plus, for a camera none of those shows, its newest sighting (not listed), so that every
row carries its camera's totals (window aggregates over the camera's partition) and every camera has a row:
at most `limit` + cameras rows leave the database, however often the plate was seen. Measured on 1M events
(~5 sightings a plate): 0.30 ms a plate, against 0.50-0.89 ms for the per-camera `GROUP BY` and the
sightings `LIMIT` as two statements in one repeatable-read transaction (four round trips with its BEGIN
and COMMIT)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from alpr_query.db import Database
from alpr_query.events.repository import SUMMARY_COLUMNS

_SUMMARY = ", ".join(SUMMARY_COLUMNS)
_RANGE = "AND ($2::timestamptz IS NULL OR first_seen >= $2) AND ($3::timestamptz IS NULL OR first_seen < $3)"

# Columns: camera_id, its count, first_seen and last_seen, whether the row is one of the `limit` newest
# sightings, then SUMMARY_COLUMNS. Newest first. $1 plate, $2/$3 time range (NULL: open), $4 limit.
HISTORY_SQL = f"""
SELECT camera_id, camera_count, camera_first_seen, camera_last_seen, newest <= $4 AS listed, {_SUMMARY}
FROM (
    SELECT {_SUMMARY},
           row_number() OVER (ORDER BY first_seen DESC, event_id DESC) AS newest,
           row_number() OVER (PARTITION BY camera_id ORDER BY first_seen DESC, event_id DESC) AS camera_newest,
           count(*) OVER camera AS camera_count,
           min(first_seen) OVER camera AS camera_first_seen,
           max(last_seen) OVER camera AS camera_last_seen
    FROM plate_events WHERE plate = $1 {_RANGE}
    WINDOW camera AS (PARTITION BY camera_id)
) AS sightings
WHERE newest <= $4 OR camera_newest = 1
ORDER BY first_seen DESC, event_id DESC
"""  # noqa: S608 - only this module's constants are spliced in
# Where the summary columns start in a row of HISTORY_SQL.
SUMMARY_AT = 5


@dataclass(frozen=True, slots=True)
class PlateRows:
    # (camera_id, count, first_seen, last_seen), the camera seen last first (ties: by camera id).
    cameras: list[tuple[str, int, datetime, datetime]]
    # The newest `limit` sightings, newest first: SUMMARY_COLUMNS from SUMMARY_AT on.
    sightings: list[asyncpg.Record]


def split(rows: list[asyncpg.Record]) -> PlateRows:
    """HISTORY_SQL's rows as the cameras and the listed sightings."""
    cameras: dict[str, tuple[str, int, datetime, datetime]] = {}
    for row in rows:
        if row[0] not in cameras:
            cameras[row[0]] = (row[0], row[1], row[2], row[3])
    ordered = sorted(cameras.values(), key=lambda c: c[0])
    ordered.sort(key=lambda c: c[3], reverse=True)  # stable: equal last_seen stay in camera id order
    return PlateRows(cameras=ordered, sightings=[r for r in rows if r[4]])


class PlateRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def history(
        self, plate: str, *, since: datetime | None, until: datetime | None, limit: int
    ) -> PlateRows:
        return split(await self.db.pool.fetch(HISTORY_SQL, plate, since, until, limit))
