"""What the events routes answer (msgspec structs; Litestar derives the OpenAPI schema from them)."""

from __future__ import annotations

from datetime import datetime

import msgspec


# gc=False: these answers hold only strings, numbers, datetimes and lists of strings, so they cannot be part
# of a reference cycle; untracked, thousands of them per second add no garbage-collector passes (tail latency).
class EventSummary(msgspec.Struct, gc=False):
    """One plate event (its newest stored revision), as listings return it.

    Built positionally from a row (`EventSummary(*row)`, 12× faster than by keyword, which is most of a
    listing's cost): the fields are in `repository.SUMMARY_COLUMNS` order, checked by a unit test.
    """

    event_id: str
    first_seen: datetime
    last_seen: datetime
    revision: int
    camera_id: str
    site_id: str
    camera_name: str
    plate: str
    plate_raw: str
    region: str
    format_valid: bool
    corrected: bool
    confidence: float
    direction: str | None
    camera_direction: str | None
    vehicle_class: str | None
    watchlist: list[str]
    has_plate_image: bool
    has_vehicle_image: bool
    # Fuzzy search only: trigram similarity of the plate to the searched text (0..1, 1 = identical).
    score: float | None = None


class EventDetail(EventSummary, kw_only=True, gc=False):
    """Everything stored about one event."""

    latitude: float | None
    longitude: float | None
    track_id: int
    tracks: int
    reads: int
    final: bool
    best_shot_at: datetime | None
    plate_box: list[float] | None
    vehicle_box: list[float] | None
    crossed_line: bool
    schema_version: int
    emitted_at: datetime | None
    stored_at: datetime
    created_at: datetime
    plate_image_url: str | None = None
    vehicle_image_url: str | None = None


class EventPage(msgspec.Struct, kw_only=True, gc=False):
    """One page of a listing, newest first (fuzzy: best score first). `next` is the cursor of the next page,
    null on the last one."""

    items: list[EventSummary]
    next: str | None
    limit: int
    # Fuzzy search: "trigram" (pg_trgm's index) or "scan" (the newest query.fuzzy_scan_limit events scored
    # in SQL, on servers without pg_trgm); null otherwise.
    fuzzy_mode: str | None = None
