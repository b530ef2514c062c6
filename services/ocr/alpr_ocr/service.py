"""`alpr ocr`: the OCR coordinator — decides which crops of each plate track to read, and when.

Owns: the `tracks` PULL socket (connects to track's PUSH), the `ocr_jobs` ROUTER (binds; workers connect
DEALERs, from this host or another over tcp://), the `plate_reads` PUSH (binds; events connects), a
`FrameReader` on the camera rings, and the per-track state (`tracks.Throttle`) and job state
(`dispatch.Dispatcher`).

Flow: each `started`/`updated` message with a frame handle gives a shot — the plate region copied out of
the ring (the copy is checked against the ring's sequence afterwards; a torn or overwritten frame is
counted as stale and dropped), scored. The throttle decides whether the track's best shot is read now;
jobs go to idle workers; each result updates the track's vote, and a `PlateRead` leaves whenever the vote
changes (interim) and once with `final=True` after the track ended (after its final read, if one was due).

Must never: drop a `PlateRead` (the PUSH waits), hold a view into a ring across an await, or send a plate
text as a metric label. Re-sending a PlateRead is safe: events dedups by track.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from alpr_ocr.dispatch import Dispatcher, DispatchOptions
from alpr_ocr.shots import Shot, encode_jpeg, make_shot
from alpr_ocr.tracks import PlateTrack, Throttle, TrackKey
from alpr_ocr.voting import Ballot
from alpr_shared.framestore import FrameReader, FrameStoreError, StaleFrameError
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import OcrJob, OcrResult, OcrWorkerReady, PlateRead, TrackMessage
from alpr_shared.settings import OcrSettings
from alpr_shared.transport import MessageSocket, PeerGone, RouterSocket, TransportError, open_router

log = get_logger(__name__)

TICK_S = 0.05  # timeouts and expiry are checked this often


class CoordinatorMetrics:
    def __init__(self, m: ServiceMetrics) -> None:
        self.queue = m.gauge("queue_jobs", "OCR jobs waiting for a free worker (the autoscaler's signal)")
        self.in_flight = m.gauge("in_flight_jobs", "OCR jobs sent to a worker and not answered yet")
        self.workers = m.gauge("workers_count", "OCR workers connected and alive")
        self.capacity = m.gauge("worker_capacity_jobs", "Jobs all connected workers take at once")
        self.jobs = m.counter("jobs_total", "OCR jobs by outcome", ["outcome"])
        self.shots = m.counter(
            "shots_total", "Track messages with a frame, by what became of them", ["outcome"]
        )
        self.reads = m.counter("plate_reads_total", "PlateReads sent to events", ["final"])
        self.tracks = m.gauge("tracks_count", "Plate tracks open in the coordinator")
        self.reads_per_track = m.histogram(
            "reads_per_track_count", "OCR reads per ended track", buckets=(0, 1, 2, 3, 4, 5, 8, 12, 20, 50)
        )
        self.latency = m.histogram("job_latency_seconds", "Job round trip, coordinator to worker and back")
        self.worker_latency = m.gauge(
            "worker_latency_seconds", "Smoothed job round trip per connected worker", ["worker"]
        )


class Coordinator:
    """The coordinator's state and decisions, with the sockets kept outside (tests drive it directly)."""

    def __init__(
        self, settings: OcrSettings, reader: FrameReader, metrics: CoordinatorMetrics | None = None
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.metrics = metrics
        self.throttle = Throttle(settings.throttle, settings.shots)
        self.dispatcher = Dispatcher(
            DispatchOptions(
                job_timeout_s=settings.job_timeout_s,
                max_attempts=settings.max_attempts,
                max_queue=settings.max_queue,
                worker_expiry_s=settings.worker_expiry_s,
            )
        )
        self.tracks: dict[TrackKey, PlateTrack] = {}
        self.outbox: list[PlateRead] = []
        self._jobs: dict[str, TrackKey] = {}
        self._job_seq = 0
        self.ocr_calls = 0
        self.stale = 0

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.shots.labels(outcome).inc()

    # --- track messages -------------------------------------------------------------------------------

    def on_track(self, message: TrackMessage, now_s: float) -> None:
        key = (message.camera_id, message.track_id)
        track = self.tracks.get(key)
        if track is None:
            if message.phase == "ended":
                return  # never saw it (we started after it): nothing to read, nothing to report
            track = PlateTrack(
                message.camera_id,
                message.track_id,
                message.first_seen_ns or message.captured_at_ns,
                message,
                now_s,
            )
            self.tracks[key] = track
        track.last_activity_s = now_s
        if message.phase == "ended":
            track.last_message = _merge_end(track.last_message, message)
            self._end(track)
            return
        track.last_message = message
        if message.frame is None or message.plate_box is None:
            return
        if not self.throttle.wants_frame(track, message, now_s):
            self._count("skipped")
            return
        shot = self._shot(message, track.frames_seen)
        if shot is None:
            return
        self.throttle.add_shot(track, shot)
        self._count("kept")
        chosen = self.throttle.next_read(track)
        if chosen is not None:
            self._read(track, chosen)

    def _shot(self, message: TrackMessage, seq: int) -> Shot | None:
        if message.frame is None or message.plate_box is None:
            return None
        try:
            view = self.reader.view(message.frame)
            shot = make_shot(
                view.array,
                message.plate_box,
                detector_score=message.plate_score,
                captured_at_ns=message.captured_at_ns,
                settings=self.settings.shots,
                seq=seq,
            )
            del view.array  # no reference into the ring may outlive this call
            self.reader.release(view)
        except StaleFrameError:
            self.stale += 1
            self._count("stale")
            return None
        except FrameStoreError as exc:
            self._count("unreadable")
            log.warning("frame_unreadable", camera=message.camera_id, error=str(exc))
            return None
        if shot is None:
            self._count("empty")
        return shot

    def _read(self, track: PlateTrack, shot: Shot) -> None:
        self._job_seq += 1
        job_id = f"{track.camera_id}:{track.track_id}:{track.reads_requested + 1}:{self._job_seq}"
        crop = shot.crop
        job = OcrJob(
            job_id=job_id,
            camera_id=track.camera_id,
            track_id=track.track_id,
            crop=crop.tobytes(),
            crop_height=crop.shape[0],
            crop_width=crop.shape[1],
            crop_channels=crop.shape[2] if crop.ndim == 3 else 1,
        )
        self.throttle.started(track, shot, job_id)
        self._jobs[job_id] = track.key
        self.ocr_calls += 1
        shed = self.dispatcher.submit(job)
        if shed is not None:
            self._job_done(shed.job_id, None)
            if self.metrics is not None:
                self.metrics.jobs.labels("shed").inc()

    def _end(self, track: PlateTrack) -> None:
        if track.ended:
            return
        track.ended = True
        final = self.throttle.final_read(track)
        if final is not None:
            self._read(track, final)
        elif track.in_flight is None:
            self._finish(track)

    def _finish(self, track: PlateTrack) -> None:
        self.tracks.pop(track.key, None)
        if self.metrics is not None:
            self.metrics.reads_per_track.observe(len(track.reads))
        read = self._plate_read(track, final=True)
        if read is not None and not track.final_sent:
            track.final_sent = True
            self.outbox.append(read)

    # --- results --------------------------------------------------------------------------------------

    def on_result(self, result: OcrResult) -> None:
        ballot = Ballot(result.text, result.confidence, result.alternatives)
        self._job_done(result.job_id, ballot)

    def _job_done(self, job_id: str, ballot: Ballot | None) -> None:
        key = self._jobs.pop(job_id, None)
        track = self.tracks.get(key) if key is not None else None
        if track is None or track.in_flight != job_id:
            return
        self.throttle.finished(track, ballot)
        if track.ended:
            self._finish(track)
            return
        if self.throttle.changed_since_published(track):
            read = self._plate_read(track, final=False)
            if read is not None:
                self.outbox.append(read)
        chosen = self.throttle.next_read(track)
        if chosen is not None:
            self._read(track, chosen)

    def _plate_read(self, track: PlateTrack, *, final: bool) -> PlateRead | None:
        current = track.current
        best = track.best_read()
        if current is None or best is None:
            return None
        track.published = (current.text, round(current.confidence, 4), len(track.reads))
        msg = track.last_message
        jpeg = encode_jpeg(
            best.shot.crop, quality=self.settings.jpeg_quality, max_side=self.settings.jpeg_max_side
        )
        return PlateRead(
            camera_id=track.camera_id,
            track_id=track.track_id,
            final=final,
            text=current.text,
            confidence=round(current.confidence, 4),
            alternatives=current.alternatives,
            reads=len(track.reads),
            first_seen_ns=track.first_seen_ns,
            last_seen_ns=msg.captured_at_ns,
            best_shot_ns=best.shot.captured_at_ns,
            plate_box=best.shot.box,
            plate_jpeg=jpeg,
            vehicle_track_id=msg.vehicle_track_id,
            vehicle_class=msg.vehicle_class,
            vehicle_box=msg.vehicle_box,
            direction=msg.direction,
            stationary=msg.stationary,
            crossed_line=msg.crossed_line,
        )

    # --- time -----------------------------------------------------------------------------------------

    def tick(self, now_s: float) -> None:
        requeued, given_up = self.dispatcher.expire(now_s)
        if self.metrics is not None:
            self.metrics.jobs.labels("resent").inc(len(requeued))
            self.metrics.jobs.labels("given_up").inc(len(given_up))
        for job in requeued:
            log.info("ocr_job_resent", job=job.job_id, attempt=job.attempt)
        for job in given_up:
            log.warning("ocr_job_given_up", job=job.job_id, attempts=job.attempt)
            self._job_done(job.job_id, None)
        idle = self.settings.throttle.idle_track_timeout_s
        for track in list(self.tracks.values()):
            if not track.ended and now_s - track.last_activity_s > idle:
                self._end(track)

    def drain_outbox(self) -> list[PlateRead]:
        out, self.outbox = self.outbox, []
        return out

    def finish_all(self) -> None:
        """Shutdown: every open track gets a final PlateRead from the reads it has (no new reads)."""
        for track in list(self.tracks.values()):
            track.in_flight = None
            track.ended = True
            self._finish(track)


def _merge_end(last: TrackMessage, end: TrackMessage) -> TrackMessage:
    """`ended` carries the last box and flags but no frame; keep what the last update knew otherwise."""
    import msgspec  # noqa: PLC0415 - tiny, only here

    return msgspec.structs.replace(
        end,
        vehicle_track_id=end.vehicle_track_id if end.vehicle_track_id is not None else last.vehicle_track_id,
        vehicle_class=end.vehicle_class or last.vehicle_class,
        vehicle_box=end.vehicle_box or last.vehicle_box,
        direction=end.direction or last.direction,
    )


# --- the process ------------------------------------------------------------------------------------------


class CoordinatorService:
    def __init__(
        self,
        ctx: ServiceContext,
        coordinator: Coordinator,
        *,
        tracks: MessageSocket[TrackMessage],
        jobs: RouterSocket[OcrResult | OcrWorkerReady, OcrJob],
        reads: MessageSocket[PlateRead],
        metrics: CoordinatorMetrics,
        monitor: MessageSocket[PlateRead] | None = None,
    ) -> None:
        self.ctx = ctx
        self.monitor = monitor
        self.c = coordinator
        self.tracks = tracks
        self.jobs = jobs
        self.reads = reads
        self.metrics = metrics
        self._sent_at: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def pump(self) -> None:
        """Send what the state wants sent: jobs to free workers, PlateReads to events."""
        async with self._lock:
            now = time.monotonic()
            for identity, job in self.c.dispatcher.assign(now):
                try:
                    await self.jobs.send(identity, job, timeout=self.c.settings.send_timeout_s)
                except PeerGone:
                    log.info("ocr_worker_gone", worker=identity.decode(errors="replace"))
                    self.c.dispatcher.unsent(identity, job)
                    continue
                self._sent_at[job.job_id] = now
                self.metrics.jobs.labels("sent").inc()
            for read in self.c.drain_outbox():
                await self.reads.send(read, timeout=self.c.settings.send_timeout_s)
                if self.monitor is not None:
                    await self.monitor.send(read)  # best effort: dropped when no viewer listens
                self.metrics.reads.labels(str(read.final).lower()).inc()
            d = self.c.dispatcher
            self.metrics.queue.set(d.depth)
            self.metrics.in_flight.set(len(d.in_flight))
            self.metrics.workers.set(len(d.workers))
            self.metrics.capacity.set(d.capacity)
            self.metrics.tracks.set(len(self.c.tracks))

    async def track_loop(self) -> None:
        while not self.ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                first = await self.tracks.recv(timeout=0.2)
                now = time.monotonic()
                for message in [first, *self.tracks.drain(256)]:
                    self.c.on_track(message, now)
                await self.pump()

    async def job_loop(self) -> None:
        while not self.ctx.stopping.is_set() or self.c.dispatcher.in_flight:
            try:
                identity, message = await self.jobs.recv(timeout=0.2)
            except TimeoutError:
                if self.ctx.stopping.is_set():
                    return
                continue
            now = time.monotonic()
            if isinstance(message, OcrWorkerReady):
                known = identity in self.c.dispatcher.workers
                self.c.dispatcher.on_ready(identity, message, now)
                if not known and message.capacity > 0:
                    log.info("ocr_worker_joined", worker=message.worker_id, capacity=message.capacity)
                elif message.capacity <= 0:
                    log.info("ocr_worker_left", worker=message.worker_id)
                    self.metrics.worker_latency.remove(message.worker_id) if known else None
            else:
                result = self.c.dispatcher.on_result(identity, message, now)
                worker = self.c.dispatcher.workers.get(identity)
                if worker is not None:
                    self.metrics.worker_latency.labels(worker.worker_id).set(worker.latency_ms / 1000.0)
                if result is None:
                    self.metrics.jobs.labels("duplicate").inc()
                    continue
                sent = self._sent_at.pop(result.job_id, None)
                if sent is not None:
                    self.metrics.latency.observe(now - sent)
                self.metrics.jobs.labels("answered").inc()
                self.c.on_result(result)
            await self.pump()

    async def tick_loop(self) -> None:
        while not self.ctx.stopping.is_set():
            await asyncio.sleep(TICK_S)
            before = set(self.c.dispatcher.workers)
            self.c.tick(time.monotonic())
            for gone in before - set(self.c.dispatcher.workers):
                log.info("ocr_worker_expired", worker=gone.decode(errors="replace"))
            await self.pump()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.track_loop())
            group.create_task(self.job_loop())
            group.create_task(self.tick_loop())
        # Stopping: the in-flight jobs were answered (or the job loop gave up waiting); report what we have.
        self.c.finish_all()
        await self.pump()


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings.ocr
    metrics = CoordinatorMetrics(ctx.metrics)
    with FrameReader() as reader, contextlib.ExitStack() as stack:
        tracks = ctx.socket("tracks", "pull", "connect", TrackMessage)
        stack.callback(tracks.close)
        reads = ctx.socket("plate_reads", "push", "bind", PlateRead, reliable=True)
        stack.callback(reads.close)
        monitor = ctx.monitor(PlateRead)
        if monitor is not None:
            stack.callback(monitor.close)
        jobs: RouterSocket[OcrResult | OcrWorkerReady, OcrJob] = open_router(
            ctx.zmq_context,
            name="ocr_jobs",
            spec=ctx.settings.endpoint("ocr_jobs"),
            default_mode="bind",
            receive_type=OcrResult | OcrWorkerReady,  # type: ignore[arg-type] # a union of message types
            send_type=OcrJob,
            hwm=ctx.settings.endpoints.messages_hwm,
            metrics=ctx.transport_metrics,
        )
        stack.callback(jobs.close)
        coordinator = Coordinator(settings, reader, metrics)
        ctx.health.set_ready()
        log.info("ocr_coordinator_ready", jobs=ctx.settings.endpoint("ocr_jobs"))
        service = CoordinatorService(
            ctx, coordinator, tracks=tracks, jobs=jobs, reads=reads, metrics=metrics, monitor=monitor
        )
        try:
            await service.run()
        except* TransportError as group:
            for exc in group.exceptions:
                log.error("ocr_transport_failed", error=str(exc))  # noqa: TRY400 - the message says it all
            raise
