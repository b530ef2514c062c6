"""Synthetic detection sequences with known ground truth, for the tracker's tests and benchmark.

Objects move at constant velocity with Gaussian box jitter; each can be hidden on chosen frames
(occlusion: no detection at all), seen with a low score on others (partly hidden: ByteTrack's second
association), enter and leave the frame. A vehicle may carry a plate (a small box at its bottom centre).
No I/O; seeded, so every run is the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from alpr_shared.schemas import Box, Detection, FrameDetections, FrameRef, ObjectClass

BoxT = tuple[float, float, float, float]


@dataclass
class SimObject:
    gt_id: int
    centre: tuple[float, float]  # at `first_frame`
    velocity: tuple[float, float]  # pixels per frame
    size: tuple[float, float]  # width, height
    label: ObjectClass = "car"
    first_frame: int = 0
    last_frame: int = 1 << 30
    hidden: set[int] = field(default_factory=set)  # frames without any detection (occluded)
    low_score: set[int] = field(default_factory=set)  # frames detected with a score of 0.2-0.45
    plate: bool = False

    def box(self, frame: int) -> BoxT:
        t = frame - self.first_frame
        cx = self.centre[0] + self.velocity[0] * t
        cy = self.centre[1] + self.velocity[1] * t
        w, h = self.size
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def plate_box(vehicle: BoxT) -> BoxT:
    """Where a vehicle's plate sits: a quarter of its width, at the bottom centre."""
    x1, y1, x2, y2 = vehicle
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    return (cx - w * 0.125, y2 - h * 0.18, cx + w * 0.125, y2 - h * 0.06)


@dataclass
class SimDetection:
    gt_id: int  # a plate's id is its vehicle's id + PLATE_ID_OFFSET
    box: BoxT
    score: float
    label: ObjectClass


@dataclass
class SimFrame:
    index: int
    detections: list[SimDetection]
    ground_truth: list[tuple[int, BoxT, ObjectClass]]  # every visible object, detected or not


PLATE_ID_OFFSET = 100_000


def simulate(
    objects: list[SimObject],
    frames: int,
    frame_size: tuple[int, int] = (1920, 1080),
    *,
    jitter: float = 1.5,
    seed: int = 0,
) -> list[SimFrame]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not security
    width, height = frame_size
    out: list[SimFrame] = []
    for f in range(frames):
        dets: list[SimDetection] = []
        gt: list[tuple[int, BoxT, ObjectClass]] = []
        for obj in objects:
            if not obj.first_frame <= f <= obj.last_frame:
                continue
            box = obj.box(f)
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            if not (0 <= cx < width and 0 <= cy < height):
                continue
            clipped = (
                max(box[0], 0.0),
                max(box[1], 0.0),
                min(box[2], width - 1.0),
                min(box[3], height - 1.0),
            )
            items: list[tuple[int, BoxT, ObjectClass]] = [(obj.gt_id, clipped, obj.label)]
            if obj.plate:
                items.append((obj.gt_id + PLATE_ID_OFFSET, plate_box(box), "plate"))
            for gt_id, b, label in items:
                gt.append((gt_id, b, label))
                if f in obj.hidden:
                    continue
                score = rng.uniform(0.2, 0.45) if f in obj.low_score else rng.uniform(0.65, 0.95)
                j = jitter * (b[3] - b[1]) / 100.0
                noisy = tuple(v + rng.gauss(0.0, j) for v in b)
                dets.append(SimDetection(gt_id, (noisy[0], noisy[1], noisy[2], noisy[3]), score, label))
        rng.shuffle(dets)  # detectors give no order
        out.append(SimFrame(f, dets, gt))
    return out


def to_message(
    frame: SimFrame,
    camera_id: str = "cam1",
    frame_size: tuple[int, int] = (1920, 1080),
    fps: float = 30.0,
    start_ns: int = 1_700_000_000_000_000_000,
) -> FrameDetections:
    """The `FrameDetections` detect would send for this frame (the frame handle is a stand-in)."""
    ref = FrameRef(
        segment=f"alpr.sim.{camera_id}",
        epoch=1,
        slot=frame.index % 16,
        seq=frame.index + 1,
        height=frame_size[1],
        width=frame_size[0],
        channels=3,
    )
    return FrameDetections(
        camera_id=camera_id,
        frame=ref,
        captured_at_ns=start_ns + round(frame.index * 1e9 / fps),
        detections=[Detection(box=Box(*d.box), score=d.score, label=d.label) for d in frame.detections],
        backend="synthetic",
        inference_ms=0.0,
    )


def traffic(
    n_objects: int, frames: int, frame_size: tuple[int, int] = (1920, 1080), seed: int = 1
) -> list[SimObject]:
    """`n_objects` vehicles in view at any time: lanes of traffic at various speeds; an object that leaves
    is replaced by a new one entering (for the benchmark's steady load)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not security
    width, height = frame_size
    objects: list[SimObject] = []
    next_id = 1
    for slot in range(n_objects):
        lane_y = (slot + 0.5) * height / n_objects
        size = (rng.uniform(60, 160), rng.uniform(40, 100))
        speed = rng.uniform(3, 12) * (1 if slot % 2 else -1)
        start = rng.uniform(0.1, 0.9) * width
        f = 0
        while f < frames:
            x0 = start if f == 0 else (0.0 if speed > 0 else width - 1.0)
            remaining = (width - x0) / speed if speed > 0 else -x0 / speed
            last = f + int(remaining)
            objects.append(
                SimObject(
                    next_id, (x0, lane_y), (speed, 0.0), size, first_frame=f, last_frame=last, plate=True
                )
            )
            next_id += 1
            f = last + 1
    return objects
