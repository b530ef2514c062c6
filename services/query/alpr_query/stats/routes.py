"""`/v1/stats/hourly`: events per camera and hour, from the rollup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter, QueryParameter

from alpr_query import params
from alpr_query.errors import V1_RESPONSES, BadParameter
from alpr_query.stats.repository import StatsRepository
from alpr_query.stats.schemas import HourlyBucket, HourlyStats

DEFAULT_SPAN = timedelta(hours=24)
# One request returns at most this span (with hourly buckets per camera, ~ 2,200 rows per camera).
MAX_SPAN = timedelta(days=92)


def handlers(repo: StatsRepository) -> list[HTTPRouteHandler]:
    @get(
        "/v1/stats/hourly",
        opt={"scope": "read"},
        responses=V1_RESPONSES,
        summary="Events per camera and UTC hour (from the hourly rollup)",
        tags=["stats"],
    )
    async def hourly(
        since: Annotated[
            datetime | None, QueryParameter(name="from", description="Start (default: `to` minus 24 h)")
        ] = None,
        until: Annotated[
            datetime | None, QueryParameter(name="to", description="End, exclusive (default: now)")
        ] = None,
        camera: Annotated[
            list[str] | None, Parameter(description="Camera id; repeatable", max_items=50)
        ] = None,
        site: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> HourlyStats:
        start, end = params.time_range(since, until)
        if end is None:
            end = datetime.now(UTC)
            if start is not None and end <= start:
                raise BadParameter("from", "must be in the past when `to` is not given")
        if start is None:
            start = end - DEFAULT_SPAN
        if end - start > MAX_SPAN:
            raise BadParameter("from", f"the range may span at most {MAX_SPAN.days} days")
        cameras = [params.identifier("camera", c) for c in camera] if camera else None
        rows = await repo.hourly(start, end, cameras, params.optional_text("site", site))
        return HourlyStats(start=start, end=end, items=[HourlyBucket(**r) for r in rows])

    return [hourly]
