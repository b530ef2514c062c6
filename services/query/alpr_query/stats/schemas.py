"""What `/v1/stats/hourly` answers."""

from __future__ import annotations

from datetime import datetime

import msgspec


class HourlyBucket(msgspec.Struct, kw_only=True):
    """Events of one camera in one UTC hour."""

    bucket: datetime
    camera_id: str
    events: int
    format_valid: int
    watchlist_hits: int
    mean_confidence: float | None


class HourlyStats(msgspec.Struct, kw_only=True):
    start: datetime
    end: datetime
    items: list[HourlyBucket]
