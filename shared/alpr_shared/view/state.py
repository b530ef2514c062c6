"""What the view knows about each camera, and which frame to draw with which boxes. No I/O here: the
server feeds messages in with the current (monotonic) time and asks what is due.

Frames are drawn from the detections' side: a `FrameDetections` names the frame it was computed on, so
its boxes land on the right pixels even though detection lags the camera. It is drawn `render_delay_s`
after it arrived, so that the track messages of the same frame (a few ms behind on the same host) are
on it too. Plate reads arrive much later than their frames; the newest read of a track is shown on the
track's box for as long as the track lives (plus `read_hold_s`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from alpr_shared.schemas import Box, FrameDetections, FrameReady, FrameRef, PlateRead, TrackMessage
from alpr_shared.settings import ViewSettings
from alpr_shared.view.draw import BoxOverlay, Overlay

FrameKey = tuple[int, int]  # (epoch, seq) of a frame in its camera's ring

# Track messages are kept per frame for this many recent frames (a frame is drawn well within that).
_FRAMES_WITH_TRACKS = 128


class RateMeter:
    """Events per second over a sliding window (`window_s`), from counts at monotonic times."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, now: float, n: int = 1) -> None:
        self._total += n
        self._points.append((now, self._total))
        while len(self._points) > 2 and now - self._points[1][0] > self.window_s:
            self._points.popleft()

    def rate(self, now: float) -> float | None:
        if len(self._points) < 2 or now - self._points[-1][0] > self.window_s:
            return None if len(self._points) < 2 else 0.0
        (t0, n0), (t1, n1) = self._points[0], self._points[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None


@dataclass
class TrackRead:
    text: str
    confidence: float
    final: bool
    at: float  # monotonic time it arrived


@dataclass
class Render:
    """One frame to draw: where its pixels are, and what to draw on them."""

    camera_id: str
    frame: FrameRef
    captured_at_ns: int
    overlay: Overlay


@dataclass
class CameraState:
    camera_id: str
    fps_in: RateMeter = field(default_factory=RateMeter)
    fps_detect: RateMeter = field(default_factory=RateMeter)
    fps_view: RateMeter = field(default_factory=RateMeter)
    newest_frame: FrameReady | None = None
    newest_frame_at: float = -1.0
    last_in_seq: dict[int, int] = field(default_factory=dict)  # epoch -> newest seq seen
    last_detections_at: float = -1.0
    pending: deque[tuple[float, FrameDetections]] = field(default_factory=deque)
    tracks_by_frame: OrderedDict[FrameKey, list[TrackMessage]] = field(default_factory=OrderedDict)
    track_seen: dict[int, float] = field(default_factory=dict)  # track id -> last update (monotonic)
    ended: dict[int, float] = field(default_factory=dict)  # track id -> when it ended
    reads: dict[int, TrackRead] = field(default_factory=dict)
    last_drawn_at: float = -1.0
    last_raw_seq: FrameKey | None = None
    plates_read: int = 0  # final reads seen since the view started


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


class ViewState:
    """Per-camera state fed by the four streams; `due()` says which frames to draw now."""

    def __init__(
        self, settings: ViewSettings, cameras: list[str] | None = None, only: str | None = None
    ) -> None:
        self.settings = settings
        self.only = only
        self.cameras: dict[str, CameraState] = {}
        for camera_id in cameras or []:
            self.camera(camera_id)

    def wanted(self, camera_id: str) -> bool:
        return self.only is None or camera_id == self.only

    def camera(self, camera_id: str) -> CameraState:
        state = self.cameras.get(camera_id)
        if state is None:
            state = self.cameras[camera_id] = CameraState(camera_id)
        return state

    # --- input ------------------------------------------------------------------------------------------

    def on_frame(self, msg: FrameReady, now: float) -> None:
        if not self.wanted(msg.camera_id):
            return
        cam = self.camera(msg.camera_id)
        previous = cam.last_in_seq.get(msg.frame.epoch)
        # Count frames from the ring's sequence, so frames this view shed or missed still count as input.
        advanced = 1 if previous is None else max(0, msg.frame.seq - previous)
        if previous is None or msg.frame.seq > previous:
            cam.last_in_seq = {msg.frame.epoch: msg.frame.seq}
        cam.fps_in.add(now, advanced)
        cam.newest_frame = msg
        cam.newest_frame_at = now

    def on_detections(self, msg: FrameDetections, now: float) -> None:
        if not self.wanted(msg.camera_id):
            return
        cam = self.camera(msg.camera_id)
        cam.fps_detect.add(now)
        cam.last_detections_at = now
        cam.pending.append((now, msg))
        # Never more than a second's worth waiting: a stalled renderer must not grow memory.
        while len(cam.pending) > 64:
            cam.pending.popleft()

    def on_track(self, msg: TrackMessage, now: float) -> None:
        if not self.wanted(msg.camera_id):
            return
        cam = self.camera(msg.camera_id)
        if msg.phase == "ended":
            cam.ended[msg.track_id] = now
            return
        cam.track_seen[msg.track_id] = now
        cam.ended.pop(msg.track_id, None)
        if msg.frame is not None:
            key = (msg.frame.epoch, msg.frame.seq)
            cam.tracks_by_frame.setdefault(key, []).append(msg)
            cam.tracks_by_frame.move_to_end(key)
            while len(cam.tracks_by_frame) > _FRAMES_WITH_TRACKS:
                cam.tracks_by_frame.popitem(last=False)

    def on_read(self, msg: PlateRead, now: float) -> None:
        if not self.wanted(msg.camera_id):
            return
        cam = self.camera(msg.camera_id)
        if msg.final and not (msg.track_id in cam.reads and cam.reads[msg.track_id].final):
            cam.plates_read += 1
        cam.reads[msg.track_id] = TrackRead(msg.text, msg.confidence, msg.final, now)

    # --- output -----------------------------------------------------------------------------------------

    def _expire(self, cam: CameraState, now: float) -> None:
        hold = self.settings.read_hold_s
        for track_id, at in list(cam.ended.items()):
            if now - at > hold:
                cam.ended.pop(track_id)
                cam.reads.pop(track_id, None)
                cam.track_seen.pop(track_id, None)
        for track_id, at in list(cam.track_seen.items()):
            if now - at > max(hold, 30.0):  # a track that vanished without "ended" (track restarted)
                cam.track_seen.pop(track_id)
                cam.reads.pop(track_id, None)

    def overlay_for(self, cam: CameraState, msg: FrameDetections, now: float) -> Overlay:
        tracks = cam.tracks_by_frame.get((msg.frame.epoch, msg.frame.seq), [])
        boxes: list[BoxOverlay] = []
        tracked_boxes: list[Box] = []
        for track in tracks:
            if track.vehicle_box is not None:
                boxes.append(BoxOverlay(_tuple(track.vehicle_box), "vehicle", track.vehicle_track_id))
            if track.plate_box is None:
                continue
            read = cam.reads.get(track.track_id)
            boxes.append(
                BoxOverlay(
                    _tuple(track.plate_box),
                    "plate",
                    track.track_id,
                    text=read.text if read else None,
                    confidence=read.confidence if read else None,
                    final=read.final if read else False,
                    score=track.plate_score,
                )
            )
            tracked_boxes.append(track.plate_box)
        for det in msg.detections:
            if det.label == "plate":
                if any(_iou(det.box, t) > 0.3 for t in tracked_boxes):
                    continue  # the track's box is drawn instead
                boxes.append(BoxOverlay(_tuple(det.box), "detection", score=det.score))
            elif not tracks:
                boxes.append(BoxOverlay(_tuple(det.box), "vehicle", score=det.score))
        return Overlay(
            camera_id=cam.camera_id,
            boxes=boxes,
            fps_in=cam.fps_in.rate(now),
            fps_detect=cam.fps_detect.rate(now),
        )

    def due(self, now: float, *, max_fps: float | None = None) -> list[Render]:
        """The frames to draw now: per camera, the newest detections older than `render_delay_s` (older
        ones are skipped), at most `max_fps` per camera; with no detections for `raw_after_s`, the newest
        raw frame with a note instead."""
        max_fps = self.settings.max_fps if max_fps is None else max_fps
        out: list[Render] = []
        for cam in self.cameras.values():
            self._expire(cam, now)
            ready: FrameDetections | None = None
            while cam.pending and now - cam.pending[0][0] >= self.settings.render_delay_s:
                ready = cam.pending.popleft()[1]
            if cam.last_drawn_at >= 0 and now - cam.last_drawn_at < 1.0 / max_fps:
                continue  # too soon for this camera; the skipped frame is simply not drawn
            if ready is not None:
                overlay = self.overlay_for(cam, ready, now)
                out.append(Render(cam.camera_id, ready.frame, ready.captured_at_ns, overlay))
                cam.last_drawn_at = now
                continue
            newest = cam.newest_frame
            stale_detections = (
                cam.last_detections_at < 0 or now - cam.last_detections_at > self.settings.raw_after_s
            )
            if newest is not None and stale_detections and not cam.pending:
                key = (newest.frame.epoch, newest.frame.seq)
                if key == cam.last_raw_seq:
                    continue
                cam.last_raw_seq = key
                note = "no detections yet" if cam.last_detections_at < 0 else "no recent detections"
                overlay = Overlay(
                    camera_id=cam.camera_id,
                    fps_in=cam.fps_in.rate(now),
                    fps_detect=cam.fps_detect.rate(now),
                    note=note,
                )
                out.append(Render(cam.camera_id, newest.frame, newest.captured_at_ns, overlay))
                cam.last_drawn_at = now
        return out

    def status(self, now: float) -> dict[str, dict[str, object]]:
        """Per camera: rates, open tracks, recent reads (for /status and the page)."""
        out: dict[str, dict[str, object]] = {}
        for camera_id, cam in sorted(self.cameras.items()):
            open_tracks = [t for t in cam.track_seen if t not in cam.ended]
            reads = sorted(cam.reads.items(), key=lambda kv: kv[1].at, reverse=True)[:10]
            out[camera_id] = {
                "fps_in": _round(cam.fps_in.rate(now)),
                "fps_detect": _round(cam.fps_detect.rate(now)),
                "fps_view": _round(cam.fps_view.rate(now)),
                "open_tracks": len(open_tracks),
                "plates_read": cam.plates_read,
                "last_frame_age_s": _round(now - cam.newest_frame_at) if cam.newest_frame_at >= 0 else None,
                "reads": [
                    {"track_id": t, "text": r.text, "confidence": round(r.confidence, 3), "final": r.final}
                    for t, r in reads
                ],
            }
        return out


def _tuple(box: Box) -> tuple[float, float, float, float]:
    return (box.x1, box.y1, box.x2, box.y2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
