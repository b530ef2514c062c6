"""What `/v1/cameras` answers."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Camera(msgspec.Struct, kw_only=True):
    """A camera the store has events from (persist keeps the table current)."""

    camera_id: str
    site_id: str
    name: str
    latitude: float | None
    longitude: float | None
    direction: str | None
    first_event_at: datetime | None
    last_event_at: datetime | None
    # Events whose first_seen lies within the hour before the request.
    events_last_hour: int


class CameraList(msgspec.Struct, kw_only=True):
    items: list[Camera]
