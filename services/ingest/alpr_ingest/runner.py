"""One camera, kept running forever: connect, decode into the ring, publish handles, reconnect on failure.

A `CameraRunner` owns the camera's `FrameWriter` (its ring) for as long as the camera is configured, so
frame numbers (`FrameRef.seq`) keep counting across reconnects. Each connection is a *session* on a
thread of its own: open the source, then for each decoded frame apply the fps cap and the file pacing,
write the frame into a reserved slot (the only copy), and hand the `FrameReady` to the event loop. A
session ends when the source fails, stalls or (files) ends; the runner then waits with exponential
backoff and jitter and tries again, forever. Nothing a camera does reaches another camera: each has its
own thread, ring and backoff, and a failure is logged and counted, never raised out of `run()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alpr_ingest.metrics import IngestMetrics
from alpr_ingest.pacing import Backoff, FpsCap, Pacer
from alpr_ingest.sources import EndOfSource, FrameSource, SourceCounters, SourceError, open_source, scrub
from alpr_shared.framestore import FrameStoreError, FrameWriter, segment_name
from alpr_shared.logging import get_logger, redact_url
from alpr_shared.schemas import FrameReady
from alpr_shared.settings import CameraSettings, FrameStoreSettings

log = get_logger(__name__)

State = Literal["starting", "connecting", "connected", "backoff", "finished", "stopped", "failed"]
SessionEnd = Literal["ended", "stopped"]
# How long stop() waits for a session thread blocked inside a decoder before leaving it behind.
THREAD_JOIN_GRACE_S = 5.0


@dataclass
class CameraStatus:
    """What the status line and the gauges show. Written by the session thread and the event loop."""

    state: State = "starting"
    frames: int = 0
    dropped_fps_cap: int = 0
    decode_errors: int = 0
    corrupt_packets: int = 0
    reconnects: int = 0
    last_frame_at: float | None = None  # monotonic
    connected_at: float | None = None
    last_error: str | None = None
    fps: float = 0.0

    def last_frame_age(self, now: float) -> float | None:
        return None if self.last_frame_at is None else now - self.last_frame_at


class CameraRunner:
    def __init__(
        self,
        camera: CameraSettings,
        store: FrameStoreSettings,
        *,
        deliver: Callable[[FrameReady], None],
        metrics: IngestMetrics,
        gstreamer_python: Path,
    ) -> None:
        self.camera = camera
        self.store = store
        self.status = CameraStatus()
        self._deliver = deliver
        self._metrics = metrics
        self._gst_python = gstreamer_python
        self._stop_thread = threading.Event()
        self._stop_async = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._counted_errors = 0
        self._counted_corrupt = 0
        self._counted_dropped = 0
        self._source_counters: SourceCounters | None = None
        self._errors_base = 0
        self._corrupt_base = 0

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"camera-{self.camera.id}")
        return self._task

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def stop(self) -> None:
        """Stop the camera: end the session (its thread), close the ring. Other cameras are untouched."""
        self._stop_thread.set()
        self._stop_async.set()
        if self._task is not None:
            await self._task

    async def run(self) -> None:
        cam = self.camera
        try:
            writer = FrameWriter(
                segment_name(self.store.namespace, cam.id),
                slot_count=self.store.slots_per_camera,
                max_height=self.store.max_height,
                max_width=self.store.max_width,
            )
        except FrameStoreError as exc:
            self.status.state = "failed"
            self.status.last_error = str(exc)
            log.error("camera_failed", camera=cam.id, error=str(exc))  # noqa: TRY400 - message says it all
            return
        backoff = Backoff(cam.backoff_min_s, cam.backoff_max_s)
        abandoned = False
        try:
            while not self._stop_async.is_set():
                self.status.state = "connecting"
                frames_before = self.status.frames
                error: BaseException | None = None
                outcome: SessionEnd | None = None
                try:
                    outcome = await self._run_session(writer)
                except (SourceError, FrameStoreError) as exc:
                    error = exc
                except _ThreadAbandoned:
                    abandoned = True
                    return
                except Exception as exc:  # a bug in a decoder path must not end the camera for good
                    log.exception("camera_session_crashed", camera=cam.id)
                    error = exc
                self._sync_counters()
                self._metrics.connected.labels(cam.id).set(0)
                if outcome == "ended":
                    self.status.state = "finished"
                    self._metrics.finished.labels(cam.id).set(1)
                    log.info("camera_finished", camera=cam.id, frames=writer.last_seq)
                    return
                if outcome == "stopped" or self._stop_async.is_set():
                    break
                await self._wait_before_retry(error, backoff, had_frames=self.status.frames > frames_before)
            self.status.state = "stopped"
        finally:
            self._metrics.connected.labels(cam.id).set(0)
            if not abandoned:
                writer.close()

    async def _wait_before_retry(
        self, error: BaseException | None, backoff: Backoff, *, had_frames: bool
    ) -> None:
        cam = self.camera
        if had_frames:
            backoff.reset()  # it worked for a while: start the backoff from the bottom again
        delay = backoff.next_delay()
        self.status.state = "backoff"
        self.status.reconnects += 1
        self._metrics.reconnects.labels(cam.id).inc()
        message = scrub(str(error), cam) if error is not None else "the source ended"
        self.status.last_error = message
        log.warning(
            "camera_disconnected" if had_frames else "camera_connect_failed",
            camera=cam.id,
            error=message,
            error_type=type(error).__name__ if error is not None else None,
            retry_in_s=round(delay, 2),
            attempt=backoff.attempt,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_async.wait(), delay)

    # --- one session --------------------------------------------------------------------------------------

    async def _run_session(self, writer: FrameWriter) -> SessionEnd:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[SessionEnd] = loop.create_future()

        def finish(result: SessionEnd | None, exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is not None or result is None:
                done.set_exception(exc or RuntimeError("session ended without a result"))
            else:
                done.set_result(result)

        def target() -> None:
            try:
                result = self._session(writer, loop)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which decides
                loop.call_soon_threadsafe(finish, None, exc)
            else:
                loop.call_soon_threadsafe(finish, result, None)

        self._stop_thread.clear()
        if self._stop_async.is_set():
            self._stop_thread.set()
        ctx = contextvars.copy_context()  # log lines from the thread keep the service's bound context
        thread = threading.Thread(
            target=ctx.run, args=(target,), name=f"ingest-{self.camera.id}", daemon=True
        )
        self._thread = thread
        thread.start()
        stop_wait = asyncio.ensure_future(self._stop_async.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {done, stop_wait}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                # Stopping: the thread sees the flag at its next frame; a read blocked in the decoder
                # returns within the stall timeout. Wait that long, then leave the thread behind.
                self._stop_thread.set()
                grace = self.camera.stall_timeout_s + THREAD_JOIN_GRACE_S
                try:
                    await asyncio.wait_for(asyncio.shield(done), grace)
                except TimeoutError as exc:
                    log.error("camera_thread_stuck", camera=self.camera.id, waited_s=grace)  # noqa: TRY400
                    raise _ThreadAbandoned from exc
                except (SourceError, FrameStoreError, EndOfSource):
                    return "stopped"
            return done.result()
        finally:
            stop_wait.cancel()

    def _session(self, writer: FrameWriter, loop: asyncio.AbstractEventLoop) -> SessionEnd:
        """The session thread: open, decode, write, hand over. Returns on end or stop; raises on failure."""
        cam = self.camera
        stop = self._stop_thread
        source: FrameSource = open_source(cam, gstreamer_python=self._gst_python)
        try:
            loop.call_soon_threadsafe(
                self._on_connected, source.counters, source.kind, source.fps, source.live
            )
            cap = FpsCap(cam.target_fps)
            pacer = Pacer() if (cam.realtime and not source.live) else None
            status = self.status
            write_seconds = self._metrics.write_seconds.labels(cam.id)
            frames_total = self._metrics.frames.labels(cam.id)
            try:
                for decoded in source.frames():
                    if stop.is_set():
                        return "stopped"
                    now = time.monotonic()
                    captured_ns = time.time_ns()
                    pts = decoded.pts if decoded.pts is not None else now
                    if not cap.accept(pts):
                        status.dropped_fps_cap += 1
                        continue
                    if pacer is not None:
                        delay = pacer.delay(pts, now)
                        if delay > 0 and stop.wait(delay):
                            return "stopped"
                    picture = decoded.picture()
                    started = time.perf_counter()
                    dest = writer.reserve(picture.shape)
                    try:
                        picture.write_into(dest)  # type: ignore[arg-type]  # uint8 slot view
                    except BaseException:
                        writer.abort()
                        raise
                    ref = writer.commit(captured_ns)
                    write_seconds.observe(time.perf_counter() - started)
                    message = FrameReady(
                        camera_id=cam.id,
                        frame=ref,
                        captured_at_ns=captured_ns,
                        published_at_ns=time.monotonic_ns(),
                        source_pts_s=decoded.pts if not source.live else None,
                    )
                    loop.call_soon_threadsafe(self._deliver, message)
                    frames_total.inc()
                    status.frames += 1
                    status.last_frame_at = time.monotonic()
            except EndOfSource:
                return "ended"
            return "ended"
        finally:
            try:
                source.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead source may fail; logged, not raised
                log.warning("camera_close_failed", camera=cam.id, error=scrub(str(exc), cam))

    def _on_connected(self, counters: SourceCounters, kind: str, fps: float, live: bool) -> None:
        cam = self.camera
        now = time.monotonic()
        status = self.status
        self._sync_counters()  # fold in the previous session's counts before following the new ones
        self._errors_base = status.decode_errors
        self._corrupt_base = status.corrupt_packets
        self._source_counters = counters
        gap = status.last_frame_age(now) if status.reconnects else None
        status.state = "connected"
        status.connected_at = now
        self._metrics.connected.labels(cam.id).set(1)
        if gap is not None:
            self._metrics.gap_seconds.labels(cam.id).observe(gap)
            log.info(
                "camera_reconnected",
                camera=cam.id,
                gap_s=round(gap, 2),
                reconnects=status.reconnects,
                last_error=status.last_error,
            )
        else:
            log.info(
                "camera_connected",
                camera=cam.id,
                kind=kind,
                source=redact_url(cam.source),
                fps=round(fps, 2),
                live=live,
                decoder=cam.decoder,
                ring=segment_name(self.store.namespace, cam.id),
            )

    def _sync_counters(self) -> None:
        """Move the session's plain counters into Prometheus (called from the event loop)."""
        counters = self._source_counters
        cam = self.camera.id
        if counters is not None:
            self.status.decode_errors = self._errors_base + counters.decode_errors
            self.status.corrupt_packets = self._corrupt_base + counters.corrupt_packets
        delta_err = self.status.decode_errors - self._counted_errors
        if delta_err > 0:
            self._metrics.decode_errors.labels(cam).inc(delta_err)
            self._counted_errors = self.status.decode_errors
        delta_corrupt = self.status.corrupt_packets - self._counted_corrupt
        if delta_corrupt > 0:
            self._metrics.corrupt_packets.labels(cam).inc(delta_corrupt)
            self._counted_corrupt = self.status.corrupt_packets
        delta_drop = self.status.dropped_fps_cap - self._counted_dropped
        if delta_drop > 0:
            self._metrics.dropped.labels(cam, "fps_cap").inc(delta_drop)
            self._counted_dropped = self.status.dropped_fps_cap


class _ThreadAbandoned(Exception):
    """A session thread did not stop in time; the ring it writes into must stay mapped."""
