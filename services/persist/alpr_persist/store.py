"""Writing plate events: COPY into a stage table, then one upsert that keeps only newer revisions.

Owns the write transaction and nothing else (no Kafka, no retries): `PlateStore.write(events)` either
commits the whole batch or raises. One transaction does it all:

1. COPY the batch into a per-connection temporary stage table (`ON COMMIT DELETE ROWS`);
2. one statement whose parts see the same snapshot:
   - `INSERT … ON CONFLICT (event_id, first_seen) DO UPDATE … WHERE stored.revision < new.revision`, so a
     redelivered batch, or an older revision arriving late, changes nothing;
   - the crops into `plate_event_images` under the same rule (and only within their retention);
   - the hourly rollup (plain path): +1 event for each row actually inserted (its `created_at` is this
     transaction's `now()`; `xmax` is not readable on a partitioned table), and for a
     newer revision the change of its confidence / validity / watchlist hit; rows left unchanged add
     nothing, so redelivery keeps the rollup exact;
   - `cameras`: created on first sight, name and location filled from events that carry them, last event
     time moved forward.

Errors are sorted for the caller: `RetriableError` (the database is unreachable, restarting, or the
transaction lost a race) — retry the same batch later; `PoisonBatchError` (the data was rejected) —
split the batch to find the bad record; anything else (e.g. a missing table: run `alpr db migrate`) is
raised as `SchemaProblem`, which the caller also retries, loudly, because an operator can fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import asyncpg

from alpr_persist import partitions
from alpr_persist.migrate import Layout
from alpr_persist.rows import STAGE_COLUMNS, event_day, event_row
from alpr_shared.schemas import PlateEvent
from alpr_shared.settings import PersistSettings

if TYPE_CHECKING:
    from alpr_persist.partitions import Conn

STAGE_TABLE = "persist_stage"

STAGE_DDL = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_TABLE} (
    event_id text, first_seen_ns bigint, last_seen_ns bigint, revision integer,
    camera_id text, site_id text, camera_name text, plate text, plate_raw text, region text,
    format_valid boolean, corrected boolean, confidence real, track_id bigint, tracks integer,
    reads integer, final boolean, best_shot_ns bigint, direction text, camera_direction text,
    vehicle_class text, latitude double precision, longitude double precision, plate_box real[],
    vehicle_box real[], crossed_line boolean, watchlist text[], schema_version smallint,
    emitted_at_ns bigint, plate_jpeg bytea, vehicle_jpeg bytea
) ON COMMIT DELETE ROWS
"""

# Stage columns of wall-clock ns → the timestamptz columns they fill. The conversion is exact: ns / 1000
# is an integer below 2^53, so interval multiplication (in float8) does not round.
_TIMES = {
    "first_seen_ns": "first_seen",
    "last_seen_ns": "last_seen",
    "best_shot_ns": "best_shot_at",
    "emitted_at_ns": "emitted_at",
}
_IMAGES = ("plate_jpeg", "vehicle_jpeg")
# Columns of plate_events filled from the stage, in stage order.
_EVENT_COLUMNS = [_TIMES.get(c, c) for c in STAGE_COLUMNS if c not in _IMAGES]
_UPDATED = [c for c in _EVENT_COLUMNS if c not in ("event_id", "first_seen")]


def _stage_select() -> str:
    parts = []
    for column in STAGE_COLUMNS:
        if column in _TIMES:
            parts.append(
                f"timestamptz '1970-01-01 00:00:00+00' + ({column} / 1000) * interval '1 microsecond' AS {_TIMES[column]}"
            )
        else:
            parts.append(column)
    return ",\n        ".join(parts)


_ROLLUP_CTE = """,
roll AS (
    INSERT INTO plate_events_hourly AS h (bucket, camera_id, events, format_valid, watchlist_hits, confidence_sum)
    SELECT date_trunc('hour', up.first_seen, 'UTC'), up.camera_id,
           count(*) FILTER (WHERE up.inserted),
           sum(up.format_valid::int - CASE WHEN up.inserted THEN 0 ELSE coalesce(old.format_valid::int, 0) END),
           sum(up.hit::int - CASE WHEN up.inserted THEN 0 ELSE coalesce(old.hit::int, 0) END),
           sum(up.confidence::float8 - CASE WHEN up.inserted THEN 0 ELSE coalesce(old.confidence::float8, 0) END)
    FROM up LEFT JOIN LATERAL (
        -- The row as it was before this statement (every part of a statement sees the same snapshot);
        -- looked up only for updated rows, so a batch of new events pays nothing for it.
        SELECT p.confidence, p.format_valid, (p.watchlist <> '{}') AS hit
        FROM plate_events p
        WHERE NOT up.inserted AND p.event_id = up.event_id AND p.first_seen = up.first_seen
        -- OFFSET 0 keeps this a per-row subquery (a primary-key probe, skipped for inserted rows):
        -- pulled up into a join, the planner scanned and sorted the whole table for every batch.
        OFFSET 0
    ) old ON true
    GROUP BY 1, 2
    ON CONFLICT (bucket, camera_id) DO UPDATE SET
        events = h.events + EXCLUDED.events,
        format_valid = h.format_valid + EXCLUDED.format_valid,
        watchlist_hits = h.watchlist_hits + EXCLUDED.watchlist_hits,
        confidence_sum = h.confidence_sum + EXCLUDED.confidence_sum
)"""


def upsert_sql(*, rollup: bool) -> str:
    """The one statement that moves the stage into the tables ($1: oldest first_seen whose crops are kept)."""
    cols = ", ".join(_EVENT_COLUMNS)
    updates = ",\n        ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)
    # Identifiers are this module's constants; values go as parameters.
    return f"""
WITH s AS (
    -- The batch holds one row per event (newest revision): `PlateStore` dedupes it before the COPY.
    SELECT
        {_stage_select()}
    FROM {STAGE_TABLE}
),
up AS (
    INSERT INTO plate_events AS p ({cols}, has_plate_image, has_vehicle_image)
    SELECT {cols}, plate_jpeg IS NOT NULL AND first_seen >= $1, vehicle_jpeg IS NOT NULL AND first_seen >= $1
    FROM s
    ON CONFLICT (event_id, first_seen) DO UPDATE SET
        {updates},
        has_plate_image = p.has_plate_image OR EXCLUDED.has_plate_image,
        has_vehicle_image = p.has_vehicle_image OR EXCLUDED.has_vehicle_image,
        stored_at = now()
    WHERE p.revision < EXCLUDED.revision
    RETURNING p.event_id, p.first_seen, p.camera_id, p.confidence, p.format_valid,
              (p.watchlist <> '{{}}') AS hit,
              (p.created_at = now()) AS inserted
),
img AS (
    INSERT INTO plate_event_images AS i (event_id, first_seen, kind, revision, jpeg)
    SELECT event_id, first_seen, 'plate', revision, plate_jpeg FROM s
    WHERE plate_jpeg IS NOT NULL AND first_seen >= $1
    UNION ALL
    SELECT event_id, first_seen, 'vehicle', revision, vehicle_jpeg FROM s
    WHERE vehicle_jpeg IS NOT NULL AND first_seen >= $1
    ON CONFLICT (event_id, first_seen, kind) DO UPDATE SET revision = EXCLUDED.revision, jpeg = EXCLUDED.jpeg
    WHERE i.revision < EXCLUDED.revision
),
cam AS (
    INSERT INTO cameras AS c (camera_id, site_id, name, latitude, longitude, direction,
                              first_event_at, last_event_at)
    SELECT camera_id,
           (array_agg(site_id ORDER BY first_seen DESC))[1],
           coalesce((array_agg(camera_name ORDER BY first_seen DESC) FILTER (WHERE camera_name <> ''))[1], ''),
           (array_agg(latitude ORDER BY first_seen DESC) FILTER (WHERE latitude IS NOT NULL))[1],
           (array_agg(longitude ORDER BY first_seen DESC) FILTER (WHERE longitude IS NOT NULL))[1],
           (array_agg(camera_direction ORDER BY first_seen DESC) FILTER (WHERE camera_direction IS NOT NULL))[1],
           min(first_seen), max(first_seen)
    FROM s GROUP BY camera_id
    ON CONFLICT (camera_id) DO UPDATE SET
        site_id = EXCLUDED.site_id,
        name = CASE WHEN EXCLUDED.name <> '' THEN EXCLUDED.name ELSE c.name END,
        latitude = coalesce(EXCLUDED.latitude, c.latitude),
        longitude = coalesce(EXCLUDED.longitude, c.longitude),
        direction = coalesce(EXCLUDED.direction, c.direction),
        first_event_at = least(c.first_event_at, EXCLUDED.first_event_at),
        last_event_at = greatest(c.last_event_at, EXCLUDED.last_event_at),
        updated_at = now()
    WHERE c.last_event_at IS DISTINCT FROM greatest(c.last_event_at, EXCLUDED.last_event_at)
       OR c.first_event_at IS DISTINCT FROM least(c.first_event_at, EXCLUDED.first_event_at)
       OR (EXCLUDED.name <> '' AND EXCLUDED.name <> c.name)
       OR EXCLUDED.site_id <> c.site_id
){_ROLLUP_CTE if rollup else ""}
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated
FROM up
"""  # noqa: S608


def newest_revisions(events: Sequence[PlateEvent]) -> list[PlateEvent]:
    """One event per (event_id, first_seen): its highest revision in the batch (ON CONFLICT may not touch
    a row twice in one statement, and an older revision would be a no-op anyway)."""
    newest: dict[tuple[str, int], PlateEvent] = {}
    for event in events:
        key = (event.event_id, event.first_seen_ns)
        kept = newest.get(key)
        if kept is None or kept.revision < event.revision:
            newest[key] = event
    return list(newest.values()) if len(newest) < len(events) else list(events)


class StoreError(Exception):
    """A batch was not stored."""


class RetriableError(StoreError):
    """The database could not take the batch now (down, restarting, a lost race); retry it unchanged."""


class PoisonBatchError(StoreError):
    """The database rejected the data of the batch; one of its records is bad."""


class SchemaProblem(StoreError):
    """The database is reachable but not in a shape to take events (e.g. migrations not applied)."""


# SQLSTATE classes: 08 connection, 40 transaction rollback (serialization, deadlock), 53 insufficient
# resources, 55 object not in prerequisite state (lock not available), 57 operator intervention (shutdown,
# cancelled statement), 58 system error. 22 data exception and 23 integrity violation are the data's fault.
_RETRIABLE_CLASSES = ("08", "40", "53", "55", "57", "58")
_POISON_CLASSES = ("22", "23")


def classify(exc: BaseException) -> StoreError:
    """Sort an exception from asyncpg or the socket under it into one of the three kinds."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | ConnectionError):
        return RetriableError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        text = f"{type(exc).__name__} [{state}]: {exc}"
        if state.startswith(_RETRIABLE_CLASSES):
            return RetriableError(text)
        if state.startswith(_POISON_CLASSES):
            return PoisonBatchError(text)
        return SchemaProblem(text)
    return SchemaProblem(f"{type(exc).__name__}: {exc}")


@dataclass
class WriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    expired: int = 0
    partitions_created: int = 0

    def add(self, other: WriteResult) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.expired += other.expired
        self.partitions_created += other.partitions_created


async def init_connection(conn: Conn) -> None:
    """asyncpg pool `init`: every connection gets its own stage table, kept for the connection's life."""
    await conn.execute(STAGE_DDL)
    # Times are stored and compared in UTC whatever the server's default zone.
    await conn.execute("SET TIME ZONE 'UTC'")


class PlateStore:
    """Stores batches of validated plate events through a pool whose connections ran `init_connection`."""

    def __init__(self, pool: asyncpg.Pool, settings: PersistSettings, layout: Layout) -> None:
        self.pool = pool
        self.settings = settings
        self.layout = layout
        self._sql = upsert_sql(rollup=layout == "partitioned")
        # Days known to have partitions (plain path): a batch only runs DDL for a day it has not seen.
        self._known_days: dict[str, set[date]] = {t: set() for t in partitions.PARTITIONED_TABLES}

    def forget_partitions(self) -> None:
        """After retention dropped partitions, re-check before writing to those days again."""
        for days in self._known_days.values():
            days.clear()

    async def write(self, events: Sequence[PlateEvent], *, today: date | None = None) -> WriteResult:
        """Store the batch in one transaction, or raise a `StoreError` with nothing written."""
        try:
            return await self._write(events, today or partitions.today_utc())
        except StoreError:
            raise
        except Exception as exc:  # sorted into retriable / poison / schema, then re-raised
            raise classify(exc) from exc

    async def _write(self, events: Sequence[PlateEvent], today: date) -> WriteResult:
        result = WriteResult()
        cutoff = partitions.retention_cutoff(today, self.settings.retention_days)
        image_cutoff = max(cutoff, partitions.retention_cutoff(today, self.settings.image_retention_days))
        rows = []
        days: set[date] = set()
        image_days: set[date] = set()
        for event in newest_revisions(events):
            day = event_day(event)
            if day < cutoff:
                result.expired += 1  # its partition is (or is about to be) dropped by retention
                continue
            keep_images = day >= image_cutoff
            days.add(day)
            if keep_images and (event.plate_jpeg is not None or event.vehicle_jpeg is not None):
                image_days.add(day)
            rows.append(event_row(event, keep_images=keep_images))
        if not rows:
            return result
        async with self.pool.acquire() as conn:
            if self.layout == "partitioned":
                result.partitions_created += await self._ensure_days(conn, "plate_events", days)
                result.partitions_created += await self._ensure_days(conn, "plate_event_images", image_days)
            image_from = datetime.combine(image_cutoff, datetime.min.time(), UTC)
            async with conn.transaction():
                await conn.copy_records_to_table(STAGE_TABLE, records=rows, columns=STAGE_COLUMNS)
                row = await conn.fetchrow(self._sql, image_from)
        if row is None:  # pragma: no cover - an aggregate without GROUP BY always returns one row
            raise SchemaProblem("the upsert returned no row")
        result.inserted = int(row["inserted"])
        result.updated = int(row["updated"])
        result.unchanged = len(events) - result.expired - result.inserted - result.updated
        return result

    async def _ensure_days(self, conn: Conn, table: str, days: set[date]) -> int:
        missing = days - self._known_days[table]
        if not missing:
            return 0
        created = await partitions.ensure_partitions(conn, table, missing)
        self._known_days[table] |= missing
        return len(created)
