"""Ingest: every configured camera decoded once into its shared-memory ring, a handle published per frame.

Owns: one `CameraRunner` per enabled camera (its ring, its session thread, its reconnect loop) and the
`frames` PUB socket with the queue in front of it. Session threads write frames into the rings and hand
`FrameReady` messages to the event loop, which alone touches the socket.

Must never: let one camera's failure reach another (each runner catches and retries its own), log a
credential (`redact_url` / `sources.scrub`), or block on a slow subscriber (PUB drops; the queue in front
of it is bounded and counts what it sheds).

SIGHUP: the new `cameras:` list is compared with the running one by id; removed cameras stop, added ones
start, changed ones restart; unchanged cameras keep running untouched. A change of `frame_store` restarts
every camera (ring sizes); a change of `endpoints` needs a process restart (logged).
"""

from __future__ import annotations

import asyncio
import time

from alpr_ingest.metrics import IngestMetrics
from alpr_ingest.runner import CameraRunner
from alpr_shared.framestore import reclaim_stale_segments
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger
from alpr_shared.schemas import FrameReady
from alpr_shared.settings import AlprSettings, CameraSettings, ConfigError
from alpr_shared.transport import MessageSocket

log = get_logger(__name__)

# Frames waiting for the socket: the loop normally sends each at once; this only bounds a stalled loop.
PUBLISH_QUEUE = 256
# Gauges (fps, counters) are refreshed this often; fps is averaged over this window.
TICK_S = 1.0
FPS_SMOOTHING = 0.5  # weight of the newest window in the fps gauge


class IngestService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.metrics = IngestMetrics(ctx.metrics)
        self.runners: dict[str, CameraRunner] = {}
        self._queue: asyncio.Queue[FrameReady] = asyncio.Queue(PUBLISH_QUEUE)
        self._settings = ctx.settings
        self._fps_prev: dict[str, tuple[float, int]] = {}
        self._lock = asyncio.Lock()

    # --- cameras ------------------------------------------------------------------------------------------

    def _deliver(self, message: FrameReady) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.metrics.dropped.labels(message.camera_id, "backlog").inc()

    def _start(self, camera: CameraSettings, settings: AlprSettings) -> None:
        runner = CameraRunner(
            camera,
            settings.frame_store,
            deliver=self._deliver,
            metrics=self.metrics,
            gstreamer_python=settings.ingest.gstreamer_python,
        )
        self.runners[camera.id] = runner
        self.metrics.register(camera.id, lambda: _age(runner))
        runner.start()

    async def _stop(self, camera_id: str) -> None:
        runner = self.runners.pop(camera_id)
        await runner.stop()
        self.metrics.forget(camera_id)
        self._fps_prev.pop(camera_id, None)

    async def apply(self, settings: AlprSettings) -> dict[str, list[str]]:
        """Make the running cameras match `settings` (start, stop, restart); returns what changed."""
        async with self._lock:
            wanted = {c.id: c for c in settings.cameras if c.enabled}
            store_changed = settings.frame_store != self._settings.frame_store
            if settings.endpoints != self._settings.endpoints:
                log.warning("reload_needs_restart", reason="endpoints changed; restart ingest to apply them")
            removed = [cid for cid in self.runners if cid not in wanted]
            changed = [
                cid
                for cid, runner in self.runners.items()
                if cid in wanted and (store_changed or runner.camera != wanted[cid])
            ]
            added = [cid for cid in wanted if cid not in self.runners]
            await asyncio.gather(*(self._stop(cid) for cid in removed + changed))
            for cid in changed + added:
                self._start(wanted[cid], settings)
            self._settings = settings
            return {"added": added, "removed": removed, "changed": changed}

    async def reload(self, settings: AlprSettings) -> None:
        result = await self.apply(settings)
        unchanged = len(self.runners) - len(result["added"]) - len(result["changed"])
        log.info("cameras_reloaded", **result, unchanged=unchanged)
        if not self.runners:
            log.warning("no_cameras", reason="the reloaded configuration has no enabled camera")

    async def stop_all(self) -> None:
        async with self._lock:
            await asyncio.gather(*(self._stop(cid) for cid in list(self.runners)))

    # --- background loops ---------------------------------------------------------------------------------

    async def publish_loop(self, publisher: MessageSocket[FrameReady]) -> None:
        while True:
            message = await self._queue.get()
            await publisher.send(message)

    async def tick_loop(self) -> None:
        status_every = self._settings.ingest.status_interval_s
        last_status = time.monotonic()
        finished_logged = False
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for cid, runner in list(self.runners.items()):
                runner._sync_counters()
                frames = runner.status.frames
                prev = self._fps_prev.get(cid)
                if prev is not None and now > prev[0]:
                    window = (frames - prev[1]) / (now - prev[0])
                    runner.status.fps = FPS_SMOOTHING * window + (1 - FPS_SMOOTHING) * runner.status.fps
                    self.metrics.fps.labels(cid).set(round(runner.status.fps, 3))
                self._fps_prev[cid] = (now, frames)
            status_every = self._settings.ingest.status_interval_s
            if status_every and now - last_status >= status_every:
                last_status = now
                self.log_status(now)
            all_done = bool(self.runners) and all(r.done for r in self.runners.values())
            if all_done and not finished_logged:
                log.info("all_sources_finished", cameras=len(self.runners))
            finished_logged = all_done

    def log_status(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for cid, runner in self.runners.items():
            st = runner.status
            age = st.last_frame_age(now)
            log.info(
                "camera_status",
                camera=cid,
                state=st.state,
                fps=round(st.fps, 2),
                last_frame_age_s=None if age is None else round(age, 2),
                frames=st.frames,
                dropped_fps_cap=st.dropped_fps_cap,
                reconnects=st.reconnects,
                decode_errors=st.decode_errors,
                corrupt_packets=st.corrupt_packets,
                last_error=st.last_error,
            )


def _age(runner: CameraRunner) -> float:
    age = runner.status.last_frame_age(time.monotonic())
    return -1.0 if age is None else age  # -1: no frame yet


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    if not any(c.enabled for c in settings.cameras):
        raise ConfigError("no enabled cameras in the configuration: add at least one under `cameras:`")
    reclaimed = reclaim_stale_segments(settings.frame_store.namespace)
    if reclaimed:
        log.warning("stale_rings_reclaimed", segments=reclaimed)
    service = IngestService(ctx)
    publisher: MessageSocket[FrameReady] = ctx.socket("frames", "pub", "bind", FrameReady)
    background: list[asyncio.Task[None]] = []
    try:
        background.append(asyncio.create_task(service.publish_loop(publisher), name="ingest-publish"))
        background.append(asyncio.create_task(service.tick_loop(), name="ingest-tick"))
        await service.apply(settings)
        ctx.on_reload(service.reload)
        ctx.health.set_ready()
        # Runs until told to stop, also after every file has ended: a supervisor decides when the run
        # is over, and late subscribers get a clean end rather than a vanished peer.
        stopping = asyncio.ensure_future(ctx.stopping.wait())
        await asyncio.wait({stopping, *background}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for task in background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # a bug in our own loops: fail loudly
    finally:
        service.log_status()  # the final state of every camera, before they stop
        await service.stop_all()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        publisher.close()
