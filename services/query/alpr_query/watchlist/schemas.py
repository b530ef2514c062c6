"""Watchlist entries as the API reads and writes them (`schemas.WatchlistEntry` is the Kafka record)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

PlateText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 .-]*$",
        description="Watched plate; separators are removed and letters upper-cased (at most 16 remain)",
    ),
]
Label = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", description="Alert label")
]
Note = Annotated[
    str, msgspec.Meta(max_length=2_000, pattern=r"^[^\x00]*$", description="Free text for operators")
]
Published = Literal["sent", "pending", "disabled"]


class WatchlistEntryIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A watched plate, as created (POST) or replaced (PUT)."""

    plate: PlateText
    label: Label = "watchlist"
    match: Literal["exact", "fuzzy"] = "exact"
    # fuzzy only: largest edit distance (Levenshtein) that still counts as a hit.
    max_distance: Annotated[int, msgspec.Meta(ge=0, le=3)] = 1
    note: Note = ""


class WatchlistEntryOut(msgspec.Struct, kw_only=True):
    entry_id: str
    plate: str
    label: str
    match: Literal["exact", "fuzzy"]
    max_distance: int
    note: str
    created_at: datetime
    updated_at: datetime
    # The edge learns of a change through Kafka: "sent" (the broker acknowledged it), "pending" (stored;
    # the broker did not answer in time, the service keeps retrying), "disabled" (query.watchlist_publish
    # is off, e.g. embedded mode without a broker: stored only).
    published: Published


class WatchlistList(msgspec.Struct, kw_only=True):
    items: list[WatchlistEntryOut]
