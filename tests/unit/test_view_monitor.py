"""`ServiceContext.monitor()`: the best-effort copy a service publishes for a live viewer. Without a viewer
sends never wait; with one bound on `endpoints.monitor` the copies arrive; "" switches it off."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import zmq.asyncio

from alpr_shared.lifecycle import ServiceContext
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Box, PlateRead, TrackMessage
from alpr_shared.settings import AlprSettings
from alpr_shared.transport import open_socket
from alpr_shared.view.server import MonitorMessage


def _ctx(tmp_path: Path, zctx: zmq.asyncio.Context, monitor: str | None = None) -> ServiceContext:
    endpoints = {} if monitor is None else {"monitor": monitor}
    settings = AlprSettings(runtime_dir=tmp_path, endpoints=endpoints)  # type: ignore[arg-type]
    return ServiceContext(
        name="track",
        settings=settings,
        metrics=ServiceMetrics("track"),
        zmq_context=zctx,
        stopping=asyncio.Event(),
    )


def _track(i: int) -> TrackMessage:
    return TrackMessage(
        camera_id="gate",
        track_id=i,
        phase="started",
        frame=None,
        captured_at_ns=i,
        plate_box=Box(0, 0, 4, 2),
        plate_score=0.5,
    )


async def test_no_viewer_never_blocks_and_a_viewer_receives(tmp_path: Path) -> None:
    zctx = zmq.asyncio.Context()
    try:
        ctx = _ctx(tmp_path, zctx)
        pub = ctx.monitor(TrackMessage)
        assert pub is not None and pub.endpoint.mode == "connect"
        started = time.monotonic()
        for i in range(20_000):  # far beyond the HWM: dropped, not waited for
            await pub.send(_track(i))
        assert time.monotonic() - started < 10
        sub = open_socket(
            zctx,
            name="monitor",
            pattern="sub",
            spec=ctx.settings.endpoint("monitor"),
            default_mode="bind",
            message_type=cast(type[Any], MonitorMessage),
            hwm=1000,
        )
        reads = ctx.monitor(PlateRead)
        assert reads is not None
        try:
            got: list[object] = []
            deadline = time.monotonic() + 10
            # Each PUB reconnects to the new listener by itself, each on its own schedule.
            while not (
                any(isinstance(m, PlateRead) for m in got) and any(isinstance(m, TrackMessage) for m in got)
            ):
                assert time.monotonic() < deadline, got[-3:]
                await pub.send(_track(1))
                await reads.send(
                    PlateRead(camera_id="gate", track_id=1, final=True, text="AB12", confidence=0.9)
                )
                try:
                    got.append(await sub.recv(timeout=0.1))
                except TimeoutError:
                    continue
                got.extend(sub.drain(100))
        finally:
            sub.close()
            pub.close()
            reads.close()
    finally:
        zctx.destroy(linger=0)


def test_empty_endpoint_switches_it_off(tmp_path: Path) -> None:
    zctx = zmq.asyncio.Context()
    try:
        assert _ctx(tmp_path, zctx, monitor="").monitor(TrackMessage) is None
    finally:
        zctx.destroy(linger=0)
