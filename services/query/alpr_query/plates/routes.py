"""`/v1/plates/{plate}`: the sightings timeline of one plate across cameras."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter, QueryParameter

from alpr_query import params
from alpr_query.errors import NOT_FOUND, V1_RESPONSES, NotFound
from alpr_query.events.schemas import EventSummary
from alpr_query.params import PathPlate
from alpr_query.plates.repository import SUMMARY_AT, PlateRepository
from alpr_query.plates.schemas import CameraSightings, PlateHistory


def handlers(repo: PlateRepository, max_page_size: int) -> list[HTTPRouteHandler]:
    @get(
        "/v1/plates/{plate:str}",
        opt={"scope": "read"},
        responses={**V1_RESPONSES, **NOT_FOUND},
        summary="Sightings of one plate across cameras: first/last seen, counts, newest sightings",
        tags=["plates"],
    )
    async def plate_history(
        plate: PathPlate,
        since: Annotated[
            datetime | None, QueryParameter(name="from", description="Oldest first_seen")
        ] = None,
        until: Annotated[
            datetime | None, QueryParameter(name="to", description="Newest first_seen (exclusive)")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=10_000, description="Sightings listed, newest first")] = 100,
    ) -> PlateHistory:
        text = params.plate("plate", plate)
        params.limit(limit, max_page_size)
        start, end = params.time_range(since, until)
        rows = await repo.history(text, since=start, until=end, limit=limit)
        if not rows.cameras:
            raise NotFound(detail=f"plate {text!r} was not seen (in this time range)")
        cameras = [CameraSightings(*r) for r in rows.cameras]
        count = sum(c.count for c in cameras)
        return PlateHistory(
            plate=text,
            count=count,
            first_seen=min(c.first_seen for c in cameras),
            last_seen=max(c.last_seen for c in cameras),
            cameras=cameras,
            sightings=[EventSummary(*r[SUMMARY_AT:]) for r in rows.sightings],
            truncated=count > len(rows.sightings),
        )

    return [plate_history]
