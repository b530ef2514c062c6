"""What `/v1/plates/{plate}` answers."""

from __future__ import annotations

from datetime import datetime

import msgspec

from alpr_query.events.schemas import EventSummary


class CameraSightings(msgspec.Struct, gc=False):  # no cycles possible: see events.schemas
    """Built positionally from the repository's row (camera_id, count, first_seen, last_seen)."""

    camera_id: str
    count: int
    first_seen: datetime
    last_seen: datetime


class PlateHistory(msgspec.Struct, kw_only=True, gc=False):
    """Where and when one plate was seen: totals, per camera, and the newest sightings (newest first)."""

    plate: str
    count: int
    first_seen: datetime
    last_seen: datetime
    cameras: list[CameraSightings]
    sightings: list[EventSummary]
    # True when `count` exceeds the sightings listed (`limit`); page further with /v1/events?plate=….
    truncated: bool
