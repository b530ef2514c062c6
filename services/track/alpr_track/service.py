"""Track: turn each camera's per-frame detections into plate tracks (ByteTrack), linked to vehicles, and
send their lifecycle to the OCR coordinator.

Owns: the `detections` PULL socket (connects to detect's PUSH) and the `tracks` PUSH socket (binds; the
OCR coordinator connects). One `CameraTracker` per camera id seen on the wire; all tracking logic is in
`camera` / `bytetrack` (pure, unit-tested) — this module only moves messages.

Never drops a track message: `send` waits while the coordinator is at its HWM (up to
`track.send_timeout_s`, then the service fails loudly), which in turn stops us from reading detections,
and detect sheds frames upstream. On SIGTERM the queued detections are processed, every open track is
ended (`end_reason="shutdown"`) so OCR and events can finalise, and the sockets close with a linger that
lets those last messages leave. A camera that sends nothing for `camera_idle_timeout_s` has its tracks
ended the same way. SIGHUP applies new zones, lines, directions and thresholds without losing tracks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger
from alpr_shared.schemas import FrameDetections, TrackMessage
from alpr_shared.settings import AlprSettings, ConfigError, TrackSettings
from alpr_shared.transport import MessageSocket
from alpr_track.camera import CameraTracker

log = get_logger(__name__)

# Ids start from the clock so that a restarted tracker does not reuse the ids of tracks OCR or events
# may still hold: unique across restarts unless a camera opens more than 1000 tracks per second of
# uptime. Wraps after ~23 days, well after any track of that age ended.
ID_BLOCK_PER_SECOND = 1000
ID_WRAP_SECONDS = 2_000_000


def clock_id_source(now_s: float | None = None) -> Callable[[], int]:
    """A counter of track ids starting at a clock-derived base (< 2**31, so it fits an SQL integer)."""
    seconds = int(time.time() if now_s is None else now_s)
    state = [(seconds % ID_WRAP_SECONDS) * ID_BLOCK_PER_SECOND]

    def next_id() -> int:
        state[0] += 1
        if state[0] >= 2**31:
            state[0] = 1
        return state[0]

    return next_id


def check_cameras(settings: AlprSettings) -> None:
    """`track.cameras` keys must name configured cameras (a typo would silently disable a zone)."""
    known = {c.id for c in settings.cameras}
    unknown = sorted(set(settings.track.cameras) - known)
    if unknown and known:
        raise ConfigError(
            f"track.cameras names unknown camera(s) {', '.join(unknown)}; configured: {', '.join(sorted(known))}"
        )


class Tracking:
    """Every camera's tracker, created on a camera's first message."""

    def __init__(self, settings: TrackSettings, next_id: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.cameras: dict[str, CameraTracker] = {}
        self._next_id = next_id or clock_id_source()
        self._last_seen: dict[str, float] = {}

    def update(self, msg: FrameDetections, now: float | None = None) -> list[TrackMessage]:
        tracker = self.cameras.get(msg.camera_id)
        if tracker is None:
            tracker = CameraTracker(
                msg.camera_id, self.settings, self.settings.cameras.get(msg.camera_id), self._next_id
            )
            self.cameras[msg.camera_id] = tracker
            log.info("camera_tracking_started", camera=msg.camera_id)
        self._last_seen[msg.camera_id] = time.monotonic() if now is None else now
        return tracker.update(msg)

    def end_idle(self, timeout_s: float, now: float | None = None) -> list[TrackMessage]:
        """End the tracks of cameras silent for `timeout_s`; their trackers start afresh if they return."""
        now = time.monotonic() if now is None else now
        out: list[TrackMessage] = []
        for camera_id, seen in list(self._last_seen.items()):
            if now - seen >= timeout_s:
                tracker = self.cameras.pop(camera_id)
                del self._last_seen[camera_id]
                ended = tracker.end_all()
                log.info(
                    "camera_idle", camera=camera_id, ended_tracks=len(ended), idle_s=round(now - seen, 1)
                )
                out.extend(ended)
        return out

    def end_all(self) -> list[TrackMessage]:
        out: list[TrackMessage] = []
        for tracker in self.cameras.values():
            out.extend(tracker.end_all())
        self.cameras.clear()
        self._last_seen.clear()
        return out

    def reconfigure(self, settings: TrackSettings) -> None:
        self.settings = settings
        for camera_id, tracker in self.cameras.items():
            tracker.reconfigure(settings, settings.cameras.get(camera_id))


class Pump:
    """Moves messages: detections in, tracker, track messages out — with the service's metrics."""

    def __init__(
        self,
        ctx: ServiceContext,
        tracking: Tracking,
        pull: MessageSocket[FrameDetections],
        push: MessageSocket[TrackMessage],
        monitor: MessageSocket[TrackMessage] | None = None,
    ) -> None:
        self.ctx = ctx
        self.monitor = monitor
        self.tracking = tracking
        self.pull = pull
        self.push = push
        m = ctx.metrics
        self._update_seconds = m.histogram(
            "update_seconds",
            "Time to track one frame's detections (all trackers of the camera, messages built)",
            ["camera"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
        )
        self._messages = m.counter(
            "lifecycle_messages_total", "Plate-track messages sent, by phase", ["camera", "phase"]
        )
        self._ended = m.counter("tracks_ended_total", "Plate tracks ended, by reason", ["camera", "reason"])
        self._open = m.gauge("open_tracks_count", "Confirmed vehicle and plate tracks held", ["camera"])

    def track(self, msg: FrameDetections) -> list[TrackMessage]:
        started = time.perf_counter()
        out = self.tracking.update(msg)
        self._update_seconds.labels(msg.camera_id).observe(time.perf_counter() - started)
        tracker = self.tracking.cameras.get(msg.camera_id)
        if tracker is not None:
            self._open.labels(msg.camera_id).set(tracker.open_tracks)
        return out

    async def send_all(self, messages: list[TrackMessage]) -> None:
        timeout = self.tracking.settings.send_timeout_s
        for message in messages:
            await self.push.send(message, timeout=timeout)
            if self.monitor is not None:
                await self.monitor.send(message)  # best effort: dropped when no viewer listens
            self._messages.labels(message.camera_id, message.phase).inc()
            if message.phase == "ended":
                self._ended.labels(message.camera_id, message.end_reason or "unknown").inc()

    async def run(self) -> None:
        tracking = self.tracking
        while not self.ctx.stopping.is_set():
            try:
                msg = await self.pull.recv(timeout=0.5)
            except TimeoutError:
                msg = None
            if msg is not None:
                await self.send_all(self.track(msg))
            idle = tracking.end_idle(tracking.settings.camera_idle_timeout_s)
            if idle:
                await self.send_all(idle)
                for camera_id in {m.camera_id for m in idle}:
                    self._open.labels(camera_id).set(0)
        # Drain: what detect already sent, then end every open track so that OCR can finalise.
        for msg in self.pull.drain(100_000):
            await self.send_all(self.track(msg))
        final = tracking.end_all()
        await self.send_all(final)
        log.info("tracking_stopped", ended_tracks=len(final))


async def service_main(ctx: ServiceContext) -> None:
    check_cameras(ctx.settings)
    tracking = Tracking(ctx.settings.track)

    async def reload(new: AlprSettings) -> None:
        try:
            check_cameras(new)
        except ConfigError as exc:
            log.error("reload_rejected", error=str(exc))  # noqa: TRY400 - the message is the whole story
            return
        tracking.reconfigure(new.track)
        log.info("track_settings_reloaded", cameras=sorted(new.track.cameras))

    ctx.on_reload(reload)
    pull: MessageSocket[FrameDetections] = ctx.socket("detections", "pull", "connect", FrameDetections)
    try:
        push: MessageSocket[TrackMessage] = ctx.socket("tracks", "push", "bind", TrackMessage)
    except BaseException:
        pull.close()
        raise
    monitor = ctx.monitor(TrackMessage)
    try:
        pump = Pump(ctx, tracking, pull, push, monitor)
        ctx.health.set_ready()
        log.info("tracking", detections=pull.endpoint.address, tracks=push.endpoint.address)
        await pump.run()
    finally:
        pull.close()
        push.close()
        if monitor is not None:
            monitor.close()
