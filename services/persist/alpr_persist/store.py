"""Writing plate events: first revisions COPYed straight into the table, later ones upserted.

Owns the write transaction and nothing else (no Kafka, no retries): `PlateStore.write(events)` either
commits the whole batch or raises. One transaction per batch (after deduping it to the newest revision
of each event):

1. first revisions (`revision == 1`: what the events service sends when it first sees a passage) are
   normally rows the table has never held: COPY them straight into `plate_events` (and their crops into
   `plate_event_images`), the same operation as a raw bulk load. If one is stored already (a redelivered
   batch after a crash or a rebalance), the COPY fails on the primary key, nothing is written, and the
   batch is written again through step 2 for every row (see `PlateStore`);
2. later revisions: COPY into a per-connection temporary stage table (`ON COMMIT DELETE ROWS`), then one
   statement whose parts see the same snapshot:
   - `INSERT … ON CONFLICT (event_id, first_seen) DO UPDATE … WHERE stored.revision < new.revision`, so a
     redelivered batch, or an older revision arriving late, changes nothing;
   - the crops into `plate_event_images` under the same rule (and only within their retention);
   - the hourly rollup (plain path): +1 event for each row actually inserted (its `created_at` is this
     transaction's `now()`; `xmax` is not readable on a partitioned table), and for a
     newer revision the change of its confidence / validity / watchlist hit; rows left unchanged add
     nothing, so redelivery keeps the rollup exact;
3. one small statement: `cameras` (created on first sight, name and location filled from events that
   carry them, last event time moved forward) from the batch's distinct camera descriptions, and the
   rollup of the rows of step 1, summed here per (hour, camera).

Errors are sorted for the caller: `RetriableError` (the database is unreachable, restarting, or the
transaction lost a race) — retry the same batch later; `PoisonBatchError` (the data was rejected) —
split the batch to find the bad record; anything else (e.g. a missing table: run `alpr db migrate`) is
raised as `SchemaProblem`, which the caller also retries, loudly, because an operator can fix it.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from alpr_persist import partitions
from alpr_persist.migrate import Layout
from alpr_persist.rows import (
    EPOCH_DAY,
    IMAGE_COLUMNS,
    NS_PER_DAY,
    STAGE_COLUMNS,
    STAGE_IMAGES,
    STAGE_TIMES,
    TABLE_COLUMNS,
    PgTime,
    Row,
    decode_time,
    encode_time,
    epoch_day,
    event_epoch_day,
    event_row,
    image_rows,
    pg_time,
    table_row,
)
from alpr_shared.schemas import PlateEvent
from alpr_shared.settings import PersistSettings

if TYPE_CHECKING:
    from alpr_persist.partitions import Conn

STAGE_TABLE = "persist_stage"
NS_PER_HOUR = 3_600 * 10**9

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

# Stage times (ns) become timestamptz in `_stage_select`. The conversion is exact: ns / 1000 is an integer
# below 2^53, so interval multiplication (in float8) does not round.
# Columns of plate_events filled from the stage, in stage order.
_EVENT_COLUMNS = [STAGE_TIMES.get(c, c) for c in STAGE_COLUMNS if c not in STAGE_IMAGES]
_UPDATED = [c for c in _EVENT_COLUMNS if c not in ("event_id", "first_seen")]


def _stage_select() -> str:
    parts = []
    for column in STAGE_COLUMNS:
        if column in STAGE_TIMES:
            parts.append(
                f"timestamptz '1970-01-01 00:00:00+00' + ({column} / 1000) * interval '1 microsecond' AS {STAGE_TIMES[column]}"
            )
        else:
            parts.append(column)
    return ",\n        ".join(parts)


_ROLLUP_CTE = """,
roll AS (
    INSERT INTO plate_events_hourly AS h (bucket, camera_id, events, format_valid, watchlist_hits, confidence_sum)
    SELECT date_trunc('hour', d.first_seen, 'UTC'), d.camera_id,
           sum(d.events), sum(d.format_valid), sum(d.hits), sum(d.confidence)
    FROM (
        SELECT first_seen, camera_id, 1 AS events, format_valid::int AS format_valid, hit::int AS hits,
               confidence::float8 AS confidence
        FROM up WHERE inserted
        UNION ALL
        -- A newer revision moves the sums by its change against the row as it was before this statement
        -- (every part of a statement sees the same snapshot). Only updated rows reach the look-up, so a
        -- batch of new events pays nothing for it.
        SELECT up.first_seen, up.camera_id, 0, up.format_valid::int - coalesce(old.format_valid::int, 0),
               up.hit::int - coalesce(old.hit::int, 0), up.confidence::float8 - coalesce(old.confidence::float8, 0)
        FROM up LEFT JOIN LATERAL (
            SELECT p.confidence, p.format_valid, (p.watchlist <> '{}') AS hit
            FROM plate_events p
            WHERE p.event_id = up.event_id AND p.first_seen = up.first_seen
            -- OFFSET 0 keeps this a per-row primary-key probe: pulled up into a join, the planner
            -- scanned and sorted the whole table for every batch.
            OFFSET 0
        ) old ON true
        WHERE NOT up.inserted
    ) d
    GROUP BY 1, 2
    ON CONFLICT (bucket, camera_id) DO UPDATE SET
        events = h.events + EXCLUDED.events,
        format_valid = h.format_valid + EXCLUDED.format_valid,
        watchlist_hits = h.watchlist_hits + EXCLUDED.watchlist_hits,
        confidence_sum = h.confidence_sum + EXCLUDED.confidence_sum
)"""

_IMAGES_CTE = """,
img AS (
    INSERT INTO plate_event_images AS i (event_id, first_seen, kind, revision, jpeg)
    SELECT event_id, first_seen, 'plate', revision, plate_jpeg FROM s
    WHERE plate_jpeg IS NOT NULL AND first_seen >= $1
    UNION ALL
    SELECT event_id, first_seen, 'vehicle', revision, vehicle_jpeg FROM s
    WHERE vehicle_jpeg IS NOT NULL AND first_seen >= $1
    ON CONFLICT (event_id, first_seen, kind) DO UPDATE SET revision = EXCLUDED.revision, jpeg = EXCLUDED.jpeg
    WHERE i.revision < EXCLUDED.revision
)"""


def upsert_sql(*, rollup: bool, images: bool = True) -> str:
    """The one statement that moves the stage into the tables ($1: oldest first_seen whose crops are kept).

    `images=False` leaves out the crops' part, for a batch that carries none (the stage is not scanned
    for them)."""
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
){_IMAGES_CTE if images else ""}{_ROLLUP_CTE if rollup else ""}
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated
FROM up
"""  # noqa: S608


_EPOCH_TS = "timestamptz '1970-01-01 00:00:00+00'"


def aggregate_sql(*, rollup: bool) -> str:
    """Cameras from every row of the batch and (with `rollup`) the hourly rollup of the rows COPYed as new.

    $1..$8: the batch's distinct camera descriptions (camera, site, name, latitude, longitude, direction,
    oldest and newest first_seen in ns): ordering them by their newest event picks what ordering every
    event would. $9..$14: the rollup's (hour since 1970, camera) groups of the new rows.
    """
    roll = f""",
roll AS (
    INSERT INTO plate_events_hourly AS h (bucket, camera_id, events, format_valid, watchlist_hits, confidence_sum)
    SELECT {_EPOCH_TS} + hour * interval '1 hour', camera_id, events, valid, hits, confidence
    FROM unnest($9::bigint[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::float8[])
         AS r(hour, camera_id, events, valid, hits, confidence)
    ON CONFLICT (bucket, camera_id) DO UPDATE SET
        events = h.events + EXCLUDED.events,
        format_valid = h.format_valid + EXCLUDED.format_valid,
        watchlist_hits = h.watchlist_hits + EXCLUDED.watchlist_hits,
        confidence_sum = h.confidence_sum + EXCLUDED.confidence_sum
)"""  # noqa: S608 - constants only; values go as parameters
    return f"""
WITH cam AS (
    INSERT INTO cameras AS c (camera_id, site_id, name, latitude, longitude, direction,
                              first_event_at, last_event_at)
    SELECT camera_id,
           (array_agg(site_id ORDER BY newest_ns DESC))[1],
           coalesce((array_agg(camera_name ORDER BY newest_ns DESC) FILTER (WHERE camera_name <> ''))[1], ''),
           (array_agg(latitude ORDER BY newest_ns DESC) FILTER (WHERE latitude IS NOT NULL))[1],
           (array_agg(longitude ORDER BY newest_ns DESC) FILTER (WHERE longitude IS NOT NULL))[1],
           (array_agg(camera_direction ORDER BY newest_ns DESC) FILTER (WHERE camera_direction IS NOT NULL))[1],
           {_EPOCH_TS} + (min(oldest_ns) / 1000) * interval '1 microsecond',
           {_EPOCH_TS} + (max(newest_ns) / 1000) * interval '1 microsecond'
    FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::text[], $7::bigint[],
                $8::bigint[])
         AS k(camera_id, site_id, camera_name, latitude, longitude, camera_direction, oldest_ns, newest_ns)
    GROUP BY camera_id
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
){roll if rollup else ""}
SELECT 1
"""  # noqa: S608 - constants only; values go as parameters


def camera_params(events: Sequence[PlateEvent]) -> list[list[Any]]:
    """$1..$8 of `aggregate_sql`: one row per distinct camera description in the batch (usually one per
    camera), with the oldest and newest first_seen of the events that carry it."""
    spans: dict[tuple[str, str, str, float | None, float | None, str | None], list[int]] = {}
    for e in events:
        key = (e.camera_id, e.site_id, e.camera_name, e.latitude, e.longitude, e.camera_direction)
        ns = e.first_seen_ns
        span = spans.get(key)
        if span is None:
            spans[key] = [ns, ns]
        elif ns < span[0]:
            span[0] = ns
        elif ns > span[1]:
            span[1] = ns
    columns: list[list[Any]] = [[] for _ in range(8)]
    for key, (oldest, newest) in spans.items():
        for column, value in zip(columns, (*key, oldest, newest), strict=True):
            column.append(value)
    return columns


def rollup_params(events: Sequence[PlateEvent]) -> list[list[Any]]:
    """$9..$14 of `aggregate_sql`: new rows counted per (hour, camera), as `date_trunc('hour', first_seen)`
    groups them; confidences summed as the table stores them (real, not the double on the wire)."""
    confidences = array("f", [e.confidence for e in events])
    groups: dict[tuple[int, str], list[Any]] = {}
    for e, confidence in zip(events, confidences, strict=True):
        key = (e.first_seen_ns // NS_PER_HOUR, e.camera_id)
        group = groups.get(key)
        if group is None:
            groups[key] = [1, int(e.format_valid), 1 if e.watchlist else 0, confidence]
        else:
            group[0] += 1
            group[1] += e.format_valid
            if e.watchlist:
                group[2] += 1
            group[3] += confidence
    columns: list[list[Any]] = [[] for _ in range(6)]
    for key, sums in groups.items():
        for column, value in zip(columns, (*key, *sums), strict=True):
            column.append(value)
    return columns


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
    copy_conflicts: int = 0  # batches whose COPY of first revisions met a stored row (then upserted)

    def add(self, other: WriteResult) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.expired += other.expired
        self.partitions_created += other.partitions_created
        self.copy_conflicts += other.copy_conflicts


async def init_connection(conn: Conn) -> None:
    """asyncpg pool `init`: every connection gets its own stage table, kept for the connection's life, and
    encodes timestamptz from `rows.pg_time` tuples (datetimes still work both ways; see `rows.encode_time`)."""
    await conn.execute(STAGE_DDL)
    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=encode_time, decoder=decode_time, format="tuple"
    )
    # Times are stored and compared in UTC whatever the server's default zone.
    await conn.execute("SET TIME ZONE 'UTC'")


# After a first revision turned out to be stored already (a redelivery), this many batches take the
# upsert path for every row: a redelivery after a restart or a rebalance re-reads a few batches in a row.
UPSERT_BATCHES_AFTER_CONFLICT = 20


@dataclass
class _Batch:
    """One batch, sorted for its transaction (built before a connection is taken)."""

    new: list[Row]  # first revisions, COPYed straight into plate_events
    new_images: list[Row]
    new_events: list[PlateEvent]
    staged: list[Row]  # later revisions: stage COPY + upsert
    staged_images: bool
    all_events: list[PlateEvent]


class PlateStore:
    """Stores batches of validated plate events through a pool whose connections ran `init_connection`.

    Two ways into plate_events, in one transaction:
    - a first revision (`revision == 1`, what the events service sends when a passage is first seen) is
      normally a row the table has never held: it is COPYed straight into plate_events (the raw COPY's
      cost), its rollup and camera contributions are summed here and written in one small statement;
    - a later revision goes through the stage table and the upsert (`upsert_sql`), which keeps only newer
      revisions and moves the rollup by the change.
    If a first revision is already stored (a redelivered batch after a crash or a rebalance, or another
    instance's write), the COPY fails on the primary key, the transaction rolls back with nothing written,
    and the batch is written again with every row through the upsert; the next
    `UPSERT_BATCHES_AFTER_CONFLICT` batches too. Either way the stored rows and the rollup are the same.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: PersistSettings,
        layout: Layout,
        *,
        copy_first_revisions: bool = True,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.layout = layout
        # False: every row through the upsert (what a batch does after a conflict; tests compare the paths).
        self.copy_first_revisions = copy_first_revisions
        self._rollup = layout == "partitioned"
        # Most batches carry no crops: their statement leaves the images' part out.
        self._sql = {images: upsert_sql(rollup=self._rollup, images=images) for images in (True, False)}
        self._aggregate_sql = aggregate_sql(rollup=self._rollup)
        # Days (since 1970) known to have partitions (plain path): a batch only runs DDL for a day it has not seen.
        self._known_days: dict[str, set[int]] = {t: set() for t in partitions.PARTITIONED_TABLES}
        self._upsert_only = 0  # batches left that take the upsert path for every row

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
        # UTC days as integers (days since 1970): per row, a datetime would cost more than the row itself.
        first_day, first_image_day = epoch_day(cutoff), epoch_day(image_cutoff)
        days: set[int] = set()
        image_days: set[int] = set()
        kept: list[tuple[PlateEvent, bool]] = []
        for event in newest_revisions(events):
            day = event_epoch_day(event)
            if day < first_day:
                result.expired += 1  # its partition is (or is about to be) dropped by retention
                continue
            keep_images = day >= first_image_day
            days.add(day)
            if keep_images and (event.plate_jpeg is not None or event.vehicle_jpeg is not None):
                image_days.add(day)
            kept.append((event, keep_images))
        if not kept:
            return result
        image_from = pg_time(first_image_day * NS_PER_DAY)
        if self._upsert_only:
            self._upsert_only -= 1
        elif self.copy_first_revisions:
            try:
                await self._transaction(self._sort(kept, copy_new=True), days, image_days, image_from, result)
            except asyncpg.UniqueViolationError:
                # A first revision is stored already: nothing was written; take the upsert path for a while.
                self._upsert_only = UPSERT_BATCHES_AFTER_CONFLICT
                result.copy_conflicts += 1
            else:
                return self._count_unchanged(result, len(events))
        await self._transaction(self._sort(kept, copy_new=False), days, image_days, image_from, result)
        return self._count_unchanged(result, len(events))

    @staticmethod
    def _count_unchanged(result: WriteResult, events: int) -> WriteResult:
        # Older revisions deduped from the batch count as unchanged too: storing them would change nothing.
        result.unchanged = events - result.expired - result.inserted - result.updated
        return result

    def _sort(self, kept: list[tuple[PlateEvent, bool]], *, copy_new: bool) -> _Batch:
        batch = _Batch([], [], [], [], False, [event for event, _ in kept])
        for event, keep_images in kept:
            if copy_new and event.revision == 1:
                batch.new.append(table_row(event, keep_images=keep_images))
                batch.new_events.append(event)
                if keep_images and (event.plate_jpeg is not None or event.vehicle_jpeg is not None):
                    batch.new_images.extend(image_rows(event))
            else:
                batch.staged.append(event_row(event, keep_images=keep_images))
                if keep_images and (event.plate_jpeg is not None or event.vehicle_jpeg is not None):
                    batch.staged_images = True
        return batch

    async def _transaction(
        self, batch: _Batch, days: set[int], image_days: set[int], image_from: PgTime, result: WriteResult
    ) -> None:
        aggregates = camera_params(batch.all_events)
        if self._rollup:
            aggregates += rollup_params(batch.new_events)
        row: asyncpg.Record | None = None
        async with self.pool.acquire() as conn:
            if self.layout == "partitioned":
                result.partitions_created += await self._ensure_days(conn, "plate_events", days)
                result.partitions_created += await self._ensure_days(conn, "plate_event_images", image_days)
            async with conn.transaction():
                if batch.new:
                    await conn.copy_records_to_table("plate_events", records=batch.new, columns=TABLE_COLUMNS)
                if batch.new_images:
                    await conn.copy_records_to_table(
                        "plate_event_images", records=batch.new_images, columns=IMAGE_COLUMNS
                    )
                if batch.staged:
                    await conn.copy_records_to_table(STAGE_TABLE, records=batch.staged, columns=STAGE_COLUMNS)
                    row = await conn.fetchrow(self._sql[batch.staged_images], image_from)
                    if row is None:  # pragma: no cover - an aggregate without GROUP BY always returns one row
                        raise SchemaProblem("the upsert returned no row")
                await conn.execute(self._aggregate_sql, *aggregates)
        result.inserted = len(batch.new) + (int(row["inserted"]) if row is not None else 0)
        result.updated = int(row["updated"]) if row is not None else 0

    async def _ensure_days(self, conn: Conn, table: str, days: set[int]) -> int:
        missing = days - self._known_days[table]
        if not missing:
            return 0
        created = await partitions.ensure_partitions(
            conn, table, {EPOCH_DAY + timedelta(days=d) for d in missing}
        )
        self._known_days[table] |= missing
        return len(created)
