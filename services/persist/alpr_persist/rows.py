"""Plate events → database rows: validation and conversion, pure and fast (no I/O).

A record that decodes but would break the database or the queries (an empty id, a confidence of 7, a NUL
byte in a text column, a time in 1970) is rejected here with a reason, so it goes to the dead-letter topic
instead of poisoning a batch. What is left for the database to reject is isolated by splitting the batch
(`alpr_persist.consumer`).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

from alpr_shared.schemas import Box, PlateEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Wall-clock bounds of a plausible event: before 2000 or after 2200 the edge's clock (or the producer) is wrong.
MIN_TIME_NS = 946_684_800 * 10**9
MAX_TIME_NS = 7_258_118_400 * 10**9
MAX_ID_CHARS = 200
MAX_TEXT_CHARS = 1_000
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# The stage table's columns, in the order of the tuples `event_row` returns (COPY needs the order). Times
# stay integers (ns) here and become timestamptz in SQL: building datetime objects in Python cost more
# than the rest of the row together.
STAGE_COLUMNS: tuple[str, ...] = (
    "event_id",
    "first_seen_ns",
    "last_seen_ns",
    "revision",
    "camera_id",
    "site_id",
    "camera_name",
    "plate",
    "plate_raw",
    "region",
    "format_valid",
    "corrected",
    "confidence",
    "track_id",
    "tracks",
    "reads",
    "final",
    "best_shot_ns",
    "direction",
    "camera_direction",
    "vehicle_class",
    "latitude",
    "longitude",
    "plate_box",
    "vehicle_box",
    "crossed_line",
    "watchlist",
    "schema_version",
    "emitted_at_ns",
    "plate_jpeg",
    "vehicle_jpeg",
)

Row = tuple[object, ...]


class InvalidEvent(ValueError):
    """A decoded event that violates the stored schema; the message says which field and why."""


def ns_to_datetime(ns: int) -> datetime:
    """Wall-clock nanoseconds → an aware UTC datetime, exact to the microsecond (no float rounding)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


NS_PER_DAY = 86_400 * 10**9
EPOCH_DAY = EPOCH.date()


def epoch_day(day: date) -> int:
    """Days from 1970-01-01 to `day` (the integer form of a UTC day that `event_epoch_day` returns)."""
    return (day - EPOCH_DAY).days


def event_epoch_day(event: PlateEvent) -> int:
    """The UTC day of the event's partition as days since 1970-01-01 (no datetime built: this runs per row)."""
    return event.first_seen_ns // NS_PER_DAY


def event_day(event: PlateEvent) -> date:
    """The UTC day whose partition holds the event."""
    return EPOCH_DAY + timedelta(days=event_epoch_day(event))


def _text(name: str, value: str, *, required: bool = False, limit: int = MAX_TEXT_CHARS) -> None:
    if required and not value:
        raise InvalidEvent(f"{name} is empty")
    if len(value) > limit:
        raise InvalidEvent(f"{name} is {len(value)} characters long (at most {limit})")
    if "\x00" in value:
        raise InvalidEvent(f"{name} contains a NUL character")


def _time(name: str, ns: int) -> None:
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise InvalidEvent(f"{name} = {ns} is not a wall-clock time in ns between 2000 and 2200")


def _box(name: str, box: Box | None) -> None:
    # Four explicit calls: a generator here was a tenth of persist's decode time.
    isfinite = math.isfinite
    if box is not None and not (
        isfinite(box.x1) and isfinite(box.y1) and isfinite(box.x2) and isfinite(box.y2)
    ):
        raise InvalidEvent(f"{name} has a non-finite coordinate")


def validate(event: PlateEvent, *, now_ns: int, max_future_ns: int) -> None:  # noqa: PLR0912 - one check per field
    """Raise `InvalidEvent` when the event cannot be stored as it is."""
    _text("event_id", event.event_id, required=True, limit=MAX_ID_CHARS)
    _text("camera_id", event.camera_id, required=True, limit=MAX_ID_CHARS)
    _text("site_id", event.site_id, limit=MAX_ID_CHARS)
    for name in ("camera_name", "plate", "plate_raw", "region", "direction", "camera_direction"):
        value = getattr(event, name)
        if value is not None:
            _text(name, value)
    if event.vehicle_class is not None:
        _text("vehicle_class", event.vehicle_class)
    for label in event.watchlist:
        _text("watchlist label", label)
    if not 0 <= event.revision <= INT32_MAX:
        raise InvalidEvent(f"revision {event.revision} is outside 0..{INT32_MAX}")
    if not 0 <= event.track_id <= INT64_MAX:
        raise InvalidEvent(f"track_id {event.track_id} is negative or too large")
    for name in ("reads", "tracks"):
        count = getattr(event, name)
        if not 0 <= count <= INT32_MAX:
            raise InvalidEvent(f"{name} {count} is outside 0..{INT32_MAX}")
    if not (math.isfinite(event.confidence) and 0.0 <= event.confidence <= 1.0):
        raise InvalidEvent(f"confidence {event.confidence} is not within 0..1")
    _time("first_seen_ns", event.first_seen_ns)
    _time("last_seen_ns", event.last_seen_ns)
    if event.last_seen_ns < event.first_seen_ns:
        raise InvalidEvent("last_seen_ns is before first_seen_ns")
    if event.first_seen_ns > now_ns + max_future_ns:
        ahead_h = (event.first_seen_ns - now_ns) / 3.6e12
        raise InvalidEvent(f"first_seen_ns is {ahead_h:.1f} h in the future (is the edge's clock wrong?)")
    for name in ("best_shot_ns", "emitted_at_ns"):
        value = getattr(event, name)
        if value:
            _time(name, value)
    if event.latitude is not None and not (math.isfinite(event.latitude) and -90 <= event.latitude <= 90):
        raise InvalidEvent(f"latitude {event.latitude} is outside -90..90")
    if event.longitude is not None and not (
        math.isfinite(event.longitude) and -180 <= event.longitude <= 180
    ):
        raise InvalidEvent(f"longitude {event.longitude} is outside -180..180")
    _box("plate_box", event.plate_box)
    _box("vehicle_box", event.vehicle_box)


def _box_list(box: Box | None) -> list[float] | None:
    return None if box is None else [box.x1, box.y1, box.x2, box.y2]


def event_row(event: PlateEvent, *, keep_images: bool) -> Row:
    """The stage-table tuple of a validated event (columns in `STAGE_COLUMNS` order)."""
    return (
        event.event_id,
        event.first_seen_ns,
        event.last_seen_ns,
        event.revision,
        event.camera_id,
        event.site_id,
        event.camera_name,
        event.plate,
        event.plate_raw,
        event.region,
        event.format_valid,
        event.corrected,
        event.confidence,
        event.track_id,
        event.tracks,
        event.reads,
        event.final,
        event.best_shot_ns or None,
        event.direction,
        event.camera_direction,
        event.vehicle_class,
        event.latitude,
        event.longitude,
        _box_list(event.plate_box),
        _box_list(event.vehicle_box),
        event.crossed_line,
        event.watchlist,
        event.schema_version,
        event.emitted_at_ns or None,
        event.plate_jpeg if keep_images else None,
        event.vehicle_jpeg if keep_images else None,
    )


# --- Rows COPYed straight into plate_events (first revisions; see `alpr_persist.store`) -----------------

# PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC. Persist's connections encode
# timestamptz from `(microseconds since 2000,)` tuples (asyncpg's "tuple" codec format, set up by
# `alpr_persist.store.init_connection`): one integer operation per value instead of a datetime object.
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_US = 946_684_800 * 10**6
_PG_INFINITY = 2**63 - 1
_ONE_US = timedelta(microseconds=1)

PgTime = tuple[int]


def pg_time(ns: int) -> PgTime:
    """Wall-clock ns → the timestamptz value persist's connections encode (exact to the microsecond)."""
    return (ns // 1000 - PG_EPOCH_US,)


def encode_time(value: object) -> PgTime:
    """asyncpg encoder of timestamptz on persist's connections: `pg_time` tuples pass through; datetimes
    (parameters from other code on the same pool) are converted; naive ones are taken as UTC."""
    if type(value) is tuple:
        return value  # a pg_time tuple, by construction
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return ((aware - PG_EPOCH) // _ONE_US,)
    raise TypeError(f"expected a datetime or a pg_time tuple for timestamptz, got {type(value).__name__}")


def decode_time(value: PgTime) -> datetime:
    """asyncpg decoder of timestamptz on persist's connections: an aware UTC datetime (±infinity → max/min)."""
    us = value[0]
    if us >= _PG_INFINITY:
        return datetime.max.replace(tzinfo=UTC)
    if us <= -_PG_INFINITY:
        return datetime.min.replace(tzinfo=UTC)
    return PG_EPOCH + timedelta(microseconds=us)


# Stage columns of wall-clock ns → the plate_events timestamptz columns they fill; the crops' columns.
STAGE_TIMES = {
    "first_seen_ns": "first_seen",
    "last_seen_ns": "last_seen",
    "best_shot_ns": "best_shot_at",
    "emitted_at_ns": "emitted_at",
}
STAGE_IMAGES = ("plate_jpeg", "vehicle_jpeg")
# plate_events' columns that `table_row` fills, in its order (the stage's, times renamed, crops out).
TABLE_COLUMNS: tuple[str, ...] = (
    *(STAGE_TIMES.get(c, c) for c in STAGE_COLUMNS if c not in STAGE_IMAGES),
    "has_plate_image",
    "has_vehicle_image",
)
IMAGE_COLUMNS: tuple[str, ...] = ("event_id", "first_seen", "kind", "revision", "jpeg")


def table_row(event: PlateEvent, *, keep_images: bool) -> Row:
    """The plate_events row of a validated event (columns in `TABLE_COLUMNS` order, times as `pg_time`)."""
    return (
        event.event_id,
        (event.first_seen_ns // 1000 - PG_EPOCH_US,),
        (event.last_seen_ns // 1000 - PG_EPOCH_US,),
        event.revision,
        event.camera_id,
        event.site_id,
        event.camera_name,
        event.plate,
        event.plate_raw,
        event.region,
        event.format_valid,
        event.corrected,
        event.confidence,
        event.track_id,
        event.tracks,
        event.reads,
        event.final,
        (event.best_shot_ns // 1000 - PG_EPOCH_US,) if event.best_shot_ns else None,
        event.direction,
        event.camera_direction,
        event.vehicle_class,
        event.latitude,
        event.longitude,
        _box_list(event.plate_box),
        _box_list(event.vehicle_box),
        event.crossed_line,
        event.watchlist,
        event.schema_version,
        (event.emitted_at_ns // 1000 - PG_EPOCH_US,) if event.emitted_at_ns else None,
        keep_images and event.plate_jpeg is not None,
        keep_images and event.vehicle_jpeg is not None,
    )


def image_rows(event: PlateEvent) -> list[Row]:
    """The plate_event_images rows of an event whose crops are kept."""
    first_seen = pg_time(event.first_seen_ns)
    rows: list[Row] = []
    if event.plate_jpeg is not None:
        rows.append((event.event_id, first_seen, "plate", event.revision, event.plate_jpeg))
    if event.vehicle_jpeg is not None:
        rows.append((event.event_id, first_seen, "vehicle", event.revision, event.vehicle_jpeg))
    return rows
