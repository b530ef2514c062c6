"""`/v1/cameras`: every camera with its last event time and its events in the last hour."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter

from alpr_query import params
from alpr_query.cameras.repository import CameraRepository
from alpr_query.cameras.schemas import Camera, CameraList
from alpr_query.errors import V1_RESPONSES


def handlers(repo: CameraRepository) -> list[HTTPRouteHandler]:
    @get(
        "/v1/cameras",
        opt={"scope": "read"},
        responses=V1_RESPONSES,
        summary="Cameras with their last event time and events in the last hour",
        tags=["cameras"],
    )
    async def list_cameras(
        site: Annotated[str | None, Parameter(description="Only this site's cameras", max_length=200)] = None,
    ) -> CameraList:
        rows = await repo.all(params.optional_text("site", site))
        return CameraList(items=[Camera(**r) for r in rows])

    return [list_cameras]
