"""Ingest: decode each camera's frames once into its shared-memory ring and publish a handle per frame.

Owns: one `FrameWriter` per camera (its ring) and the `frames` PUB socket. Decoding runs in a worker
thread per camera (OpenCV releases the GIL while decoding); the frame is written into the ring by that
thread — the only copy of its pixels — and the handle is published from the event loop.

Sources at this stage: video files (paced at the file's rate or as fast as possible, optionally looped).
RTSP, MJPEG, V4L2, image folders, GStreamer decoders and reconnection are the ingest issue's work; a
camera with such a source is reported and left out, the others run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from alpr_shared.framestore import FrameStoreError, FrameWriter, reclaim_stale_segments, segment_name
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger, redact_url
from alpr_shared.schemas import FrameReady, FrameRef
from alpr_shared.settings import CameraSettings, ConfigError, FrameStoreSettings
from alpr_shared.transport import MessageSocket

log = get_logger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".m4v", ".webm"}


class SourceError(RuntimeError):
    """A camera's source cannot be opened or read."""


@dataclass
class DecodedFrame:
    ref: FrameRef
    captured_at_ns: int
    pts_s: float | None


class FileSource:
    """A video file read with OpenCV's bundled FFmpeg. Blocking: call from a worker thread."""

    def __init__(self, camera: CameraSettings) -> None:
        path = Path(camera.source)
        if not path.is_file():
            raise SourceError(f"camera {camera.id}: video file {path} does not exist")
        self.path = path
        self.loop = camera.loop
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise SourceError(f"camera {camera.id}: cannot open {path} as a video")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps <= 240.0 else 25.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def read(self) -> tuple[npt.NDArray[np.uint8], float] | None:
        """The next frame and its presentation time (s), or None at the end of the file."""
        ok, frame = self._cap.read()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok:
            return None
        pts = float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        return np.asarray(frame, dtype=np.uint8), pts

    def close(self) -> None:
        self._cap.release()


def _is_file_source(camera: CameraSettings) -> bool:
    return Path(camera.source).suffix.lower() in VIDEO_SUFFIXES and "://" not in camera.source


class CameraRunner:
    """Reads one camera into its ring and publishes handles, until told to stop or the file ends."""

    def __init__(
        self,
        camera: CameraSettings,
        store: FrameStoreSettings,
        publisher: MessageSocket[FrameReady],
        ctx: ServiceContext,
    ) -> None:
        self.camera = camera
        self.store = store
        self.publisher = publisher
        self.ctx = ctx
        metrics = ctx.metrics
        self._frames = metrics.counter("frames_total", "Frames decoded and published", ["camera"])
        self._write_seconds = metrics.histogram(
            "frame_write_seconds", "Time to copy a decoded frame into its shared-memory slot", ["camera"]
        )

    async def run(self) -> None:
        cam = self.camera
        source = await asyncio.to_thread(FileSource, cam)
        writer = FrameWriter(
            segment_name(self.store.namespace, cam.id),
            slot_count=self.store.slots_per_camera,
            max_height=self.store.max_height,
            max_width=self.store.max_width,
        )
        log.info(
            "camera_started", camera=cam.id, source=redact_url(cam.source), fps=source.fps, ring=writer.name
        )
        min_interval = 1.0 / cam.target_fps if cam.target_fps else 0.0
        frame_interval = 1.0 / source.fps if cam.realtime else 0.0
        interval = max(min_interval, frame_interval)
        next_due = time.monotonic()
        try:
            while not self.ctx.stopping.is_set():
                decoded = await asyncio.to_thread(self._decode_into, source, writer)
                if decoded is None:
                    log.info("camera_finished", camera=cam.id, frames=writer.last_seq)
                    return
                await self.publisher.send(
                    FrameReady(
                        camera_id=cam.id,
                        frame=decoded.ref,
                        captured_at_ns=decoded.captured_at_ns,
                        published_at_ns=time.monotonic_ns(),
                        source_pts_s=decoded.pts_s,
                    )
                )
                self._frames.labels(cam.id).inc()
                if interval:
                    next_due += interval
                    delay = next_due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        next_due = time.monotonic()  # behind schedule: do not burst to catch up
        finally:
            await asyncio.to_thread(source.close)
            # Subscribers may still hold the last handles; the segment disappears for new readers only.
            writer.close()

    def _decode_into(self, source: FileSource, writer: FrameWriter) -> DecodedFrame | None:
        got = source.read()
        if got is None:
            return None
        frame, pts = got
        captured = time.time_ns()
        started = time.perf_counter()
        ref = writer.write(frame, captured_at_ns=captured)
        self._write_seconds.labels(self.camera.id).observe(time.perf_counter() - started)
        return DecodedFrame(ref, captured, pts)


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    cameras = [c for c in settings.cameras if c.enabled]
    if not cameras:
        raise ConfigError("no enabled cameras in the configuration: add at least one under `cameras:`")
    reclaimed = reclaim_stale_segments(settings.frame_store.namespace)
    if reclaimed:
        log.warning("stale_rings_reclaimed", segments=reclaimed)
    runnable = []
    for camera in cameras:
        if _is_file_source(camera):
            runnable.append(camera)
        else:
            log.error(
                "camera_source_unsupported",
                camera=camera.id,
                source=redact_url(camera.source),
                reason="only video files are supported so far (RTSP/MJPEG/V4L2 land with the ingest issue)",
            )
    if not runnable:
        raise SourceError("none of the configured cameras has a supported source")
    publisher: MessageSocket[FrameReady] = ctx.socket("frames", "pub", "bind", FrameReady)
    try:
        runners = [CameraRunner(cam, settings.frame_store, publisher, ctx) for cam in runnable]
        ctx.health.set_ready()
        results = await asyncio.gather(*(r.run() for r in runners), return_exceptions=True)
        for camera, result in zip(runnable, results, strict=True):
            if isinstance(result, SourceError | FrameStoreError):
                log.error("camera_failed", camera=camera.id, error=str(result))
            elif isinstance(result, BaseException):
                raise result
        if not ctx.stopping.is_set():
            # Keep the socket (and our metrics endpoint) up until told to stop: a supervisor decides when
            # the run is over, and late subscribers still get a clean end rather than a vanished peer.
            log.info("all_sources_finished")
            await ctx.stopping.wait()
    finally:
        publisher.close()
