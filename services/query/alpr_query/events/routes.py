"""`/v1/events`: the filtered listing with cursor pagination, one event, and its JPEG crops.

Handlers validate and normalise parameters (`alpr_query.params`), then call the repository; no SQL here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter, QueryParameter

from alpr_query import cursor, params
from alpr_query.errors import NOT_FOUND, V1_RESPONSES, BadParameter, NotFound
from alpr_query.events.repository import EventFilter, EventRepository, Row
from alpr_query.events.schemas import EventDetail, EventPage, EventSummary
from alpr_query.params import PathId

Limit = Annotated[int, Parameter(ge=1, le=10_000, description="Page size (at most query.max_page_size)")]
_IMAGE_RESPONSES = {
    **V1_RESPONSES,
    **NOT_FOUND,
    200: ResponseSpec(data_container=bytes, media_type="image/jpeg", description="The JPEG crop"),
}


def summary(row: Row) -> EventSummary:
    # Columns in field order (SUMMARY_COLUMNS, then `score` when the query ranks by similarity).
    return EventSummary(*row)


def page(rows: list[Row], limit: int, filters: str, fuzzy_mode: str | None) -> EventPage:
    items = [summary(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = cursor.encode(
            cursor.Position(first_seen=last.first_seen, event_id=last.event_id, score=last.score), filters
        )
    return EventPage(items=items, next=next_cursor, limit=limit, fuzzy_mode=fuzzy_mode)


def handlers(repo: EventRepository, max_page_size: int) -> list[HTTPRouteHandler]:
    @get(
        "/v1/events",
        opt={"scope": "read"},
        responses=V1_RESPONSES,
        summary="List plate events, newest first (fuzzy search: best match first)",
        tags=["events"],
    )
    async def list_events(
        *,
        plate: Annotated[
            str | None, Parameter(description="Plate text; how it matches is set by `match`", max_length=64)
        ] = None,
        match: Annotated[
            Literal["exact", "prefix", "fuzzy"],
            Parameter(description="exact, prefix, or fuzzy (trigram similarity, ranked, with a score)"),
        ] = "exact",
        min_score: Annotated[
            float, Parameter(ge=0.05, le=1.0, description="fuzzy only: least similarity (0..1) of a match")
        ] = 0.3,
        camera: Annotated[
            list[str] | None, Parameter(description="Camera id; repeat for several cameras", max_items=50)
        ] = None,
        site: Annotated[str | None, Parameter(max_length=200)] = None,
        region: Annotated[str | None, Parameter(max_length=200)] = None,
        direction: Annotated[str | None, Parameter(max_length=200)] = None,
        since: Annotated[
            datetime | None,
            QueryParameter(name="from", description="Oldest first_seen (inclusive), ISO 8601"),
        ] = None,
        until: Annotated[
            datetime | None, QueryParameter(name="to", description="Newest first_seen (exclusive), ISO 8601")
        ] = None,
        min_confidence: Annotated[float | None, Parameter(ge=0.0, le=1.0)] = None,
        watchlist: Annotated[
            bool | None, Parameter(description="true: only watchlist hits; false: only events without")
        ] = None,
        watchlist_label: Annotated[
            str | None, Parameter(description="Only hits of this watchlist label", max_length=200)
        ] = None,
        limit: Limit = 50,
        cursor_: Annotated[
            str | None,
            QueryParameter(name="cursor", description="`next` of the previous page", max_length=512),
        ] = None,
    ) -> EventPage:
        params.limit(limit, max_page_size)
        start, end = params.time_range(since, until)
        filters = EventFilter(
            plate=None if plate is None else params.plate("plate", plate),
            match=match,
            min_score=min_score,
            cameras=tuple(dict.fromkeys(params.identifier("camera", c) for c in camera or ())),
            site=params.optional_text("site", site),
            region=params.optional_text("region", region),
            since=start,
            until=end,
            min_confidence=min_confidence,
            direction=params.optional_text("direction", direction),
            watchlist_hit=watchlist,
            watchlist_label=params.optional_text("watchlist_label", watchlist_label),
        )
        if match != "exact" and filters.plate is None:
            raise BadParameter("plate", f"is required when match is {match!r}")
        fingerprint = filters.fingerprint()
        after = None if cursor_ is None else cursor.decode(cursor_, fingerprint)
        if after is not None and filters.fuzzy != (after.score is not None):
            raise BadParameter("cursor", "was made for other filters; start again without a cursor")
        rows, fuzzy_mode = await repo.search(filters, limit=limit, after=after)
        return page(rows, limit, fingerprint, fuzzy_mode)

    @get(
        "/v1/events/{event_id:str}",
        opt={"scope": "read"},
        responses={**V1_RESPONSES, **NOT_FOUND},
        summary="One plate event with everything stored about it",
        tags=["events"],
    )
    async def get_event(event_id: PathId) -> EventDetail:
        row = await repo.get(params.identifier("event_id", event_id))
        if row is None:
            raise NotFound(detail=f"no event {event_id!r}")
        detail = EventDetail(**row)
        if detail.has_plate_image:
            detail.plate_image_url = f"/v1/events/{detail.event_id}/plate.jpg"
        if detail.has_vehicle_image:
            detail.vehicle_image_url = f"/v1/events/{detail.event_id}/vehicle.jpg"
        return detail

    async def _image(event_id: PathId, kind: Literal["plate", "vehicle"]) -> Response[bytes]:
        data = await repo.image(params.identifier("event_id", event_id), kind)
        if data is None:
            raise NotFound(detail=f"no {kind} image for event {event_id!r} (none stored, or past retention)")
        return Response(
            content=data,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=86400"},
        )

    @get(
        "/v1/events/{event_id:str}/plate.jpg",
        opt={"scope": "read"},
        responses=_IMAGE_RESPONSES,
        summary="The plate crop (JPEG) of an event",
        tags=["events"],
        media_type="image/jpeg",
    )
    async def plate_image(event_id: PathId) -> Response[bytes]:
        return await _image(event_id, "plate")

    @get(
        "/v1/events/{event_id:str}/vehicle.jpg",
        opt={"scope": "read"},
        responses=_IMAGE_RESPONSES,
        summary="The vehicle crop (JPEG) of an event, when one was stored",
        tags=["events"],
        media_type="image/jpeg",
    )
    async def vehicle_image(event_id: PathId) -> Response[bytes]:
        return await _image(event_id, "vehicle")

    return [list_events, get_event, plate_image, vehicle_image]
