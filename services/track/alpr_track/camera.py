"""One camera's tracking: vehicles and plates through ByteTrack, plates linked to vehicles, and the
plate-track lifecycle (`TrackMessage` started / updated / ended) that the OCR coordinator consumes.

Pure: `CameraTracker.update(FrameDetections)` returns the messages to send and touches nothing else,
so every rule here is unit-tested on synthetic sequences.

Rules:
- vehicles (car/truck/bus/motorcycle, one tracker, class by majority vote) and plates (another tracker)
  are tracked separately; a plate belongs to the vehicle box that contains most of it
  (`plate_in_vehicle_min`), and inherits its track id, class and motion (direction, stationary, line);
  a plate with no vehicle around it is tracked all the same and uses its own motion;
- with zones configured, a plate track is announced (`started`) and updated only while its centre is
  inside a zone: plates elsewhere are tracked but never sent to OCR;
- `updated` carries the frame handle and plate box of every frame the plate is seen in a zone, so OCR
  can choose its best shot; `ended` follows once the track is lost for the buffer, left the frame, or
  the camera/service stopped — only for tracks that were `started`;
- stationary: a track whose centre stays within `stationary_radius` box heights of one spot for
  `stationary_after_s` — and such a track, once lost, waits `stationary_lost_buffer` frames to be
  re-found, so a parked vehicle hidden by passing traffic keeps one track (one plate event).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from alpr_shared.schemas import Box, FrameDetections, FrameRef, ObjectClass, TrackMessage, TrackPhase
from alpr_shared.settings import ByteTrackSettings, TrackCameraSettings, TrackSettings
from alpr_track.bytetrack import ByteTracker, ByteTrackParams, Track
from alpr_track.geometry import Point, containment_matrix, crossing, point_in_polygon

Array = npt.NDArray[np.float64]
VEHICLE_CLASSES: frozenset[str] = frozenset({"car", "truck", "bus", "motorcycle"})


def params_from_settings(s: ByteTrackSettings, match_expand: float = 0.0) -> ByteTrackParams:
    return ByteTrackParams(
        match_expand=match_expand,
        high_score_thresh=s.high_score_thresh,
        low_score_thresh=s.low_score_thresh,
        new_track_thresh=s.new_track_thresh,
        match_iou=s.match_iou,
        low_match_iou=s.low_match_iou,
        confirm_match_iou=s.confirm_match_iou,
        lost_track_buffer=s.lost_track_buffer,
        lost_track_max_ns=round(s.lost_track_seconds * 1e9),
        fuse_score=s.fuse_score,
    )


@dataclass
class Motion:
    """Where a track has been: direction of travel, stationary flag, counting-line crossing."""

    origin: Point
    anchor: Point
    anchor_ns: int
    last: Point
    stationary: bool = False
    crossed_line: bool = False
    direction: str | None = None

    @classmethod
    def start(cls, centre: Point, now_ns: int) -> Motion:
        return cls(origin=centre, anchor=centre, anchor_ns=now_ns, last=centre)


@dataclass
class VehicleState:
    motion: Motion
    classes: Counter[str] = field(default_factory=Counter)

    @property
    def vehicle_class(self) -> ObjectClass | None:
        if not self.classes:
            return None
        label = self.classes.most_common(1)[0][0]
        return label if label in VEHICLE_CLASSES else None  # type: ignore[return-value]  # narrowed by set


@dataclass
class PlateState:
    motion: Motion
    first_seen_ns: int
    last_seen_ns: int
    started: bool = False
    zone_id: str | None = None
    vehicle: Track | None = None  # the vehicle track it was last seen in
    vehicle_box: Box | None = None


def _centre(box: tuple[float, float, float, float]) -> Point:
    return ((box[0] + box[2]) * 0.5, (box[1] + box[3]) * 0.5)


class CameraTracker:
    """Tracks one camera. Feed it the camera's `FrameDetections` in order; send what it returns."""

    def __init__(
        self,
        camera_id: str,
        settings: TrackSettings,
        camera: TrackCameraSettings | None,
        next_id: Callable[[], int],
    ) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self.camera = camera or TrackCameraSettings()
        bt = self.camera.bytetrack or settings.bytetrack
        self.vehicles = ByteTracker(params_from_settings(bt, settings.vehicle_match_expand), next_id)
        self.plates = ByteTracker(params_from_settings(bt, settings.plate_match_expand), next_id)
        self.last_captured_ns = 0
        self.last_frame: FrameRef | None = None

    def reconfigure(self, settings: TrackSettings, camera: TrackCameraSettings | None) -> None:
        """New zones / line / direction / thresholds; open tracks carry on."""
        self.settings = settings
        self.camera = camera or TrackCameraSettings()
        bt = self.camera.bytetrack or settings.bytetrack
        self.vehicles.params = params_from_settings(bt, settings.vehicle_match_expand)
        self.plates.params = params_from_settings(bt, settings.plate_match_expand)

    # --- per frame ------------------------------------------------------------------------------------

    def update(self, msg: FrameDetections) -> list[TrackMessage]:
        now = msg.captured_at_ns
        self.last_captured_ns = now
        self.last_frame = msg.frame
        frame_size = (msg.frame.width, msg.frame.height)
        diagonal = math.hypot(msg.frame.width, msg.frame.height)
        vboxes: list[tuple[float, float, float, float]] = []
        vscores: list[float] = []
        vlabels: list[str] = []
        pboxes: list[tuple[float, float, float, float]] = []
        pscores: list[float] = []
        for det in msg.detections:
            b = det.box
            if det.label == "plate":
                pboxes.append((b.x1, b.y1, b.x2, b.y2))
                pscores.append(det.score)
            else:
                vboxes.append((b.x1, b.y1, b.x2, b.y2))
                vscores.append(det.score)
                vlabels.append(det.label)
        vehicles = self._update_vehicles(
            vboxes, vscores, vlabels, frame_size=frame_size, now=now, diagonal=diagonal
        )
        pb = np.array(pboxes, dtype=np.float64).reshape(-1, 4)
        pstep = self.plates.update(pb, np.array(pscores, dtype=np.float64), frame_size, stamp=now)
        out: list[TrackMessage] = []
        states: list[PlateState] = []
        for track in pstep.active:
            state = track.user
            if not isinstance(state, PlateState):
                state = PlateState(
                    motion=Motion.start(_centre(track.box), now),
                    first_seen_ns=track.first_stamp or now,
                    last_seen_ns=now,
                )
                track.user = state
            states.append(state)
        if states:
            self._link_vehicles(pstep.active, states, vehicles)
        for track, state in zip(pstep.active, states, strict=True):
            centre = _centre(track.box)
            state.last_seen_ns = now
            self._move(track, state.motion, centre, now, diagonal)
            inside, zone = self._zone_of(centre)
            if not inside:
                continue  # outside every zone: tracked, not read
            state.zone_id = zone
            phase: TrackPhase = "updated" if state.started else "started"
            state.started = True
            out.append(self._message(track, state, phase, msg.frame, now))
        for track in pstep.ended:
            state = track.user
            if isinstance(state, PlateState) and state.started:
                out.append(self._message(track, state, "ended", None, state.last_seen_ns))
        return out

    def _update_vehicles(
        self,
        boxes: list[tuple[float, float, float, float]],
        scores: list[float],
        labels: list[str],
        *,
        frame_size: tuple[int, int],
        now: int,
        diagonal: float,
    ) -> list[Track]:
        vb = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        step = self.vehicles.update(vb, np.array(scores, dtype=np.float64), frame_size)
        for track in step.active:
            centre = _centre(track.box)
            state = track.user
            if not isinstance(state, VehicleState):
                state = VehicleState(motion=Motion.start(centre, now))
                track.user = state
            state.classes[labels[track.det_index]] += 1
            self._move(track, state.motion, centre, now, diagonal)
        return step.active

    def end_all(self) -> list[TrackMessage]:
        """End every open track (service stopping, camera idle): OCR and events can finalise."""
        self.vehicles.end_all("shutdown")
        out = []
        for track in self.plates.end_all("shutdown"):
            state = track.user
            if isinstance(state, PlateState) and state.started:
                out.append(self._message(track, state, "ended", None, state.last_seen_ns))
        return out

    @property
    def open_tracks(self) -> int:
        return sum(1 for t in self.plates.tracks if t.confirmed) + sum(
            1 for t in self.vehicles.tracks if t.confirmed
        )

    # --- rules ----------------------------------------------------------------------------------------

    def _link_vehicles(self, plates: list[Track], states: list[PlateState], vehicles: list[Track]) -> None:
        if not vehicles:
            return
        pb = np.array([t.box for t in plates], dtype=np.float64)
        vb = np.array([t.box for t in vehicles], dtype=np.float64)
        share = containment_matrix(pb, vb)
        # Among the vehicles that contain the plate, the smallest (the nearest, in front of the others).
        varea = (vb[:, 2] - vb[:, 0]) * (vb[:, 3] - vb[:, 1])
        candidates = np.where(share >= self.settings.plate_in_vehicle_min, varea[None, :], np.inf)
        best = np.argmin(candidates, axis=1)
        found = np.isfinite(candidates[np.arange(len(plates)), best])
        for i, state in enumerate(states):
            if found[i]:
                state.vehicle = vehicles[int(best[i])]

    def _move(self, track: Track, motion: Motion, centre: Point, now: int, diagonal: float) -> None:
        s = self.settings
        line = self.camera.counting_line
        if line is not None and not motion.crossed_line:
            motion.crossed_line = crossing(line.start, line.end, motion.last, centre) != 0
        motion.last = centre
        height = max(track.box[3] - track.box[1], 1.0)
        if math.dist(centre, motion.anchor) > s.stationary_radius * height:
            motion.anchor = centre
            motion.anchor_ns = now
            motion.stationary = False
        elif now - motion.anchor_ns >= s.stationary_after_s * 1e9:
            motion.stationary = True
        track.max_lost = (
            s.stationary_lost_buffer if motion.stationary else self.plates.params.lost_track_buffer
        )
        # A parked vehicle waits its whole frame buffer, however slowly frames are processed.
        track.max_lost_ns = 0 if motion.stationary else self.plates.params.lost_track_max_ns
        dx = centre[0] - motion.origin[0]
        dy = centre[1] - motion.origin[1]
        if math.hypot(dx, dy) >= s.direction_min_travel * diagonal:
            d = self.camera.direction
            if d is not None:
                forward = dx * d.vector[0] + dy * d.vector[1] >= 0
                motion.direction = d.forward if forward else d.backward
            elif abs(dx) >= abs(dy):
                motion.direction = "right" if dx > 0 else "left"
            else:
                motion.direction = "down" if dy > 0 else "up"

    def _zone_of(self, centre: Point) -> tuple[bool, str | None]:
        """(inside, zone id): inside any zone — or anywhere when no zones are configured (id None)."""
        zones = self.camera.zones
        if not zones:
            return True, None
        for zone in zones:
            if point_in_polygon(centre, zone.points):
                return True, zone.id
        return False, None

    def _message(
        self, track: Track, state: PlateState, phase: TrackPhase, frame: FrameRef | None, now: int
    ) -> TrackMessage:
        motion = state.motion
        vehicle_id: int | None = None
        vehicle_class: ObjectClass | None = None
        vehicle_box: Box | None = None
        vehicle = state.vehicle
        if vehicle is not None and isinstance(vehicle.user, VehicleState):
            vstate = vehicle.user
            vehicle_id = vehicle.track_id
            vehicle_class = vstate.vehicle_class
            vb = vehicle.box
            vehicle_box = Box(vb[0], vb[1], vb[2], vb[3])
            motion = vstate.motion
        b = track.box
        return TrackMessage(
            camera_id=self.camera_id,
            track_id=track.track_id,
            phase=phase,
            frame=frame,
            captured_at_ns=now,
            plate_box=Box(b[0], b[1], b[2], b[3]),
            plate_score=track.score,
            vehicle_track_id=vehicle_id,
            vehicle_class=vehicle_class,
            vehicle_box=vehicle_box,
            direction=motion.direction,
            stationary=motion.stationary,
            crossed_line=motion.crossed_line or state.motion.crossed_line,
            zone_id=state.zone_id,
            first_seen_ns=state.first_seen_ns,
            hits=track.hits,
            end_reason=track.end_reason if phase == "ended" else None,
        )
