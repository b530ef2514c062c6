"""Detect: plates (and vehicles, when a vehicle model is provisioned) on every camera's frames, batched.

Owns: the `frames` SUB socket (connects to ingest), the `detections` PUSH socket (binds; track
connects a PULL), one `FrameReader` (maps ingest's rings read-only), the model sessions, and the frame
pool. Two tasks: the receiver drains `frames` into the bounded `FramePool` (oldest dropped per camera
under overload); the batcher takes up to `batch_size` frames (or what came by `batch_deadline_ms`),
reads their pixels in place, letterboxes them into one tensor, checks every slot was not overwritten
meanwhile (`FrameReader.release`), runs one inference call in a worker thread, and sends one
`FrameDetections` per frame, in order per camera. Detections are never dropped: a slow track makes
`send` wait, and frames are shed upstream instead.

Never: load a model or open a socket at import; download anything (a missing model is one clear error
naming `alpr models …`).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from alpr_detect.backends.base import ModelFileError
from alpr_detect.batching import FramePool, Pending
from alpr_detect.build import build_pipeline, model_store
from alpr_detect.detections import Detections
from alpr_detect.motion import MotionConfig, MotionGate
from alpr_detect.pipeline import DetectionPipeline
from alpr_shared.framestore import FrameReader, FrameStoreError, FrameView, StaleFrameError
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger
from alpr_shared.schemas import FrameDetections, FrameReady
from alpr_shared.settings import ConfigError, DetectSettings
from alpr_shared.transport import FrameSubscription, MessageSocket

log = get_logger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class BatchResult:
    """What one batch produced: detections for the frames that survived, and what happened to the rest."""

    done: list[tuple[FrameReady, Detections]]
    stale: list[FrameReady]
    skipped: list[FrameReady]
    inference_s: float


class DetectMetrics:
    def __init__(self, ctx: ServiceContext) -> None:
        m = ctx.metrics
        self.inference = m.histogram(
            "inference_seconds", "One inference call (all models, whole batch)", ["backend", "batch"]
        )
        self.batch_frames = m.histogram(
            "batch_frames", "Frames per inference batch", buckets=[float(b) for b in BATCH_BUCKETS]
        )
        self.frames_in = m.counter("frames_in_total", "Frames taken from the frames socket", ["camera"])
        self.frames_out = m.counter("frames_out_total", "Frames whose detections were sent", ["camera"])
        self.dropped = m.counter(
            "frames_dropped_total",
            "Frames not detected: overload (oldest waiting dropped), stale (slot overwritten), error",
            ["camera", "reason"],
        )
        self.skipped = m.counter("frames_skipped_total", "Frames skipped by the motion gate", ["camera"])
        self.detections = m.counter("detections_total", "Objects detected, by class", ["label"])
        self.latency = m.histogram(
            "frame_latency_seconds", "From ingest's publication to detections sent (monotonic)", ["camera"]
        )


class Detector:
    """The batch step, run in a worker thread: shared memory → tensor → detections."""

    def __init__(self, pipeline: DetectionPipeline, reader: FrameReader, settings: DetectSettings) -> None:
        self.pipeline = pipeline
        self.reader = reader
        self.settings = settings
        self.backend_name = pipeline.plates.backend.name
        self._gates: dict[str, MotionGate] = {}
        motion = settings.motion
        self._motion = (
            MotionConfig(
                motion.thumbnail_width,
                motion.pixel_threshold,
                motion.min_changed_fraction,
                motion.forced_interval_s,
            )
            if motion.enabled
            else None
        )

    def _gate(self, camera: str) -> MotionGate | None:
        if self._motion is None:
            return None
        gate = self._gates.get(camera)
        if gate is None:
            gate = self._gates[camera] = MotionGate(self._motion)
        return gate

    def run(self, items: list[Pending]) -> BatchResult:
        stale: list[FrameReady] = []
        skipped: list[FrameReady] = []
        views: list[FrameView] = []
        messages: list[FrameReady] = []
        now = time.monotonic()
        for item in items:
            msg = item.message
            try:
                view = self.reader.view(msg.frame)
            except (StaleFrameError, FrameStoreError):
                stale.append(msg)
                continue
            gate = self._gate(msg.camera_id)
            if gate is not None:
                go, _ = gate.should_detect(np.asarray(view.array, dtype=np.uint8), now)
                if not go:
                    skipped.append(msg)
                    continue
            views.append(view)
            messages.append(msg)
        if not views:
            return BatchResult([], stale, skipped, 0.0)
        torn: set[int] = set()

        def check(i: int) -> None:
            # Pixels of frame i are now in the batch tensor: were they still frame i's?
            try:
                self.reader.release(views[i])
            except StaleFrameError:
                torn.add(i)

        images = [np.asarray(v.array, dtype=np.uint8) for v in views]
        started = time.perf_counter()
        plate_batch, vehicle_batch = self.pipeline.prepare(images, after_each=check)
        found = self.pipeline.infer_and_decode(plate_batch, vehicle_batch)
        if self.pipeline.needs_pixels_after_inference:
            refined = self.pipeline.finish(found, images)
            # The second pass read the frames again: a slot overwritten meanwhile falls back to the
            # first pass's boxes (shrunk), which came from untorn pixels.
            fallback: list[Detections] | None = None
            for i, view in enumerate(views):
                if i not in torn and not view.still_valid():
                    fallback = fallback or self.pipeline.finish(found)
                    refined[i] = fallback[i]
        else:
            refined = self.pipeline.finish(found)
        elapsed = time.perf_counter() - started
        done: list[tuple[FrameReady, Detections]] = []
        for i, msg in enumerate(messages):
            if i in torn:
                stale.append(msg)
            else:
                done.append((msg, refined[i].with_frame(msg.frame)))
        return BatchResult(done, stale, skipped, elapsed)


async def _receive(
    ctx: ServiceContext, subscription: FrameSubscription, pool: FramePool, metrics: DetectMetrics
) -> None:
    while not ctx.stopping.is_set():
        try:
            batch = await subscription.next_batch(timeout=0.25)
        except TimeoutError:
            continue
        now = time.monotonic()
        for message in batch:
            metrics.frames_in.labels(message.camera_id).inc()
            pool.add(message, now)


async def _detect_loop(
    ctx: ServiceContext,
    *,
    settings: DetectSettings,
    pool: FramePool,
    detector: Detector,
    out: MessageSocket[FrameDetections],
    metrics: DetectMetrics,
    monitor: MessageSocket[FrameDetections] | None = None,
) -> None:
    deadline_s = settings.batch_deadline_ms / 1000
    while not ctx.stopping.is_set():
        try:
            await asyncio.wait_for(pool.wait_batch(settings.batch_size, deadline_s, time.monotonic), 0.25)
        except TimeoutError:
            continue
        items = pool.take(settings.batch_size)
        if not items:
            continue
        result = await asyncio.to_thread(detector.run, items)
        for msg in result.stale:
            metrics.dropped.labels(msg.camera_id, "stale").inc()
        for msg in result.skipped:
            metrics.skipped.labels(msg.camera_id).inc()
        if not result.done:
            continue
        n = len(result.done)
        metrics.inference.labels(detector.backend_name, str(n)).observe(result.inference_s)
        metrics.batch_frames.observe(n)
        inference_ms = round(result.inference_s * 1000, 3)
        for msg, dets in result.done:
            wire = dets.to_messages()
            message = FrameDetections(
                camera_id=msg.camera_id,
                frame=msg.frame,
                captured_at_ns=msg.captured_at_ns,
                detections=wire,
                backend=detector.backend_name,
                inference_ms=inference_ms,
            )
            await out.send(message, timeout=settings.send_timeout_s)
            if monitor is not None:
                await monitor.send(message)  # best effort: dropped when no viewer listens
            metrics.frames_out.labels(msg.camera_id).inc()
            metrics.latency.labels(msg.camera_id).observe(
                max(0.0, (time.monotonic_ns() - msg.published_at_ns) / 1e9)
            )
            for det in wire:
                metrics.detections.labels(det.label).inc()


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings.detect
    metrics = DetectMetrics(ctx)
    store = model_store(settings)
    with ExitStack() as stack:
        try:
            pipeline = await asyncio.to_thread(build_pipeline, settings, store, stack)
        except ModelFileError as exc:
            # One clear line naming the command that provisions the model; exit code 2.
            raise ConfigError(str(exc)) from exc
        if settings.vehicle_model is None:
            log.warning(
                "vehicle_stage_disabled",
                reason="no vehicle model configured (none ships offline); plates only, vehicle class unknown",
            )
        reader = stack.enter_context(FrameReader())
        frames: MessageSocket[FrameReady] = ctx.socket("frames", "sub", "connect", FrameReady)
        stack.callback(frames.close)
        out: MessageSocket[FrameDetections] = ctx.socket("detections", "push", "bind", FrameDetections)
        stack.callback(out.close)
        monitor = ctx.monitor(FrameDetections)
        if monitor is not None:
            stack.callback(monitor.close)
        subscription = FrameSubscription(frames, per_camera=settings.max_pending_per_camera)
        pool = FramePool(
            settings.max_pending_per_camera,
            on_drop=lambda m: metrics.dropped.labels(m.camera_id, "overload").inc(),
        )
        detector = Detector(pipeline, reader, settings)
        log.info(
            "detect_ready",
            backend=detector.backend_name,
            plate_model=settings.plate_model,
            input_size=settings.input_size,
            refine=settings.refine,
            batch_size=settings.batch_size,
            motion_gate=settings.motion.enabled,
        )
        ctx.health.set_ready()
        async with asyncio.TaskGroup() as group:
            group.create_task(_receive(ctx, subscription, pool, metrics), name="detect-receive")
            group.create_task(
                _detect_loop(
                    ctx,
                    settings=settings,
                    pool=pool,
                    detector=detector,
                    out=out,
                    metrics=metrics,
                    monitor=monitor,
                ),
                name="detect-batch",
            )
        log.info("detect_stopped", reader_stale=reader.stats.stale, frames_read=reader.stats.frames_read)
