"""ByteTrack on synthetic sequences with known ground truth, scored with motmetrics (MOTA, ID switches).

Thresholds are what a correct ByteTrack meets on these easy-to-moderate sequences: no identity switch
where objects cross or hide for a few frames, MOTA close to 1 (misses only on each track's first,
unconfirmed frame and on frames where the object is fully hidden).
"""

from __future__ import annotations

import dataclasses
import itertools

import lap
import motmetrics as mm
import numpy as np
import pytest

from alpr_track import kalman
from alpr_track.bytetrack import ByteTracker, ByteTrackParams, Track
from alpr_track.geometry import containment_matrix, crossing, iou_matrix, point_in_polygon
from alpr_track.synthetic import SimFrame, SimObject, simulate, traffic

SIZE = (1920, 1080)


def run(
    frames: list[SimFrame], params: ByteTrackParams | None = None
) -> tuple[dict[str, float], list[list[Track]], list[Track]]:
    """Track the vehicles of `frames`; returns motmetrics' summary, active tracks per frame, ended tracks."""
    ids = itertools.count(1)
    tracker = ByteTracker(params or ByteTrackParams(), lambda: next(ids))
    acc = mm.MOTAccumulator(auto_id=True)
    per_frame: list[list[Track]] = []
    ended: list[Track] = []
    for frame in frames:
        dets = [d for d in frame.detections if d.label != "plate"]
        boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d.score for d in dets], dtype=np.float64)
        step = tracker.update(boxes, scores, SIZE)
        ended.extend(step.ended)
        per_frame.append([dataclasses.replace(t, user=None) for t in step.active])  # snapshot
        gt = [(g, b) for g, b, label in frame.ground_truth if label != "plate"]
        hyp_boxes = np.array([t.box for t in step.active], dtype=np.float64).reshape(-1, 4)
        gt_boxes = np.array([b for _, b in gt], dtype=np.float64).reshape(-1, 4)
        dist = 1.0 - iou_matrix(gt_boxes, hyp_boxes)
        dist[dist > 0.5] = np.nan  # IoU < 0.5 is no match (the MOT challenge's rule)
        acc.update([g for g, _ in gt], [t.track_id for t in step.active], dist)
    summary = mm.metrics.create().compute(
        acc, metrics=["mota", "num_switches", "num_false_positives", "num_misses", "num_unique_objects"]
    )
    row = {k: float(v) for k, v in summary.iloc[0].items()}
    return row, per_frame, ended


def ids_of(per_frame: list[list[Track]], frames: list[SimFrame], gt_id: int) -> set[int]:
    """Track ids that covered ground-truth object `gt_id` (optimal IoU assignment on each frame)."""
    out: set[int] = set()
    for active, frame in zip(per_frame, frames, strict=True):
        gt = [(g, b) for g, b, label in frame.ground_truth if label != "plate"]
        if not active or gt_id not in [g for g, _ in gt]:
            continue
        iou = iou_matrix(np.array([b for _, b in gt]), np.array([t.box for t in active]))
        _, x, _ = lap.lapjv(1.0 - iou, extend_cost=True, cost_limit=0.5)
        row = [g for g, _ in gt].index(gt_id)
        if x[row] >= 0:
            out.add(active[x[row]].track_id)
    return out


def test_crossing_objects_keep_their_ids() -> None:
    # Two cars cross at the centre of the frame, overlapping heavily for several frames.
    objects = [
        SimObject(1, (300, 500), (12, 0), (160, 100)),
        SimObject(2, (1600, 530), (-12, 0), (160, 100)),
    ]
    frames = simulate(objects, 110, SIZE)
    metrics, per_frame, _ = run(frames)
    assert metrics["num_switches"] == 0
    assert metrics["mota"] >= 0.95
    assert len(ids_of(per_frame, frames, 1)) == 1
    assert len(ids_of(per_frame, frames, 2)) == 1


def test_occlusion_for_a_few_frames_keeps_the_id() -> None:
    hidden = set(range(30, 38))  # 8 frames with no detection at all
    objects = [SimObject(1, (200, 400), (8, 1), (150, 90), hidden=hidden)]
    frames = simulate(objects, 80, SIZE)
    metrics, per_frame, ended = run(frames)
    assert ids_of(per_frame, frames, 1) == {1}
    assert metrics["num_switches"] == 0
    # Misses: the first (unconfirmed) frame and the hidden ones; nothing else.
    assert metrics["num_misses"] <= len(hidden) + 1
    assert not ended


def test_low_score_boxes_continue_a_track() -> None:
    # Partly hidden: the detector still sees the car, with scores a plain tracker would discard.
    objects = [SimObject(1, (200, 400), (8, 0), (150, 90), low_score=set(range(20, 30)))]
    frames = simulate(objects, 50, SIZE)
    _, per_frame, _ = run(frames)
    for f in range(20, 30):
        assert [t.track_id for t in per_frame[f]] == [1], f"frame {f}"


def test_objects_entering_and_leaving() -> None:
    objects = [
        SimObject(i, (-60.0, 150.0 + 180 * i), (15, 0), (140, 90), first_frame=12 * i) for i in range(1, 6)
    ]
    frames = simulate(objects, 220, SIZE)
    metrics, per_frame, ended = run(frames)
    assert metrics["num_switches"] == 0
    assert metrics["mota"] >= 0.95
    for obj in objects:
        assert len(ids_of(per_frame, frames, obj.gt_id)) == 1
    # Every object drove out on the right: its track ended as left_frame, not after the whole buffer.
    assert sorted(t.track_id for t in ended) == [1, 2, 3, 4, 5]
    assert {t.end_reason for t in ended} == {"left_frame"}


def test_track_lost_beyond_buffer_ends_as_lost() -> None:
    objects = [SimObject(1, (900, 500), (0.5, 0), (150, 90), last_frame=10)]
    frames = simulate(objects, 60, SIZE)
    _, _, ended = run(frames, ByteTrackParams(lost_track_buffer=20))
    assert [(t.track_id, t.end_reason, t.last_frame) for t in ended] == [(1, "lost", 11)]


def test_lost_buffer_is_also_bounded_by_time() -> None:
    # Detect keeps up with 4 of the camera's frames per second: 30 processed frames would be 7.5 s,
    # so the time bound (1 s) must end the track first; a second car appearing at the same place
    # 2 s later then gets a new id instead of inheriting the first car's track.
    ids = itertools.count(1)
    params = ByteTrackParams(lost_track_buffer=30, lost_track_max_ns=1_000_000_000)
    tracker = ByteTracker(params, lambda: next(ids))
    box = np.array([[900.0, 500.0, 1050.0, 590.0]])
    score = np.array([0.9])
    none = np.zeros((0, 4))
    step_ns = 250_000_000  # 4 frames/s
    ended: list[Track] = []
    seen: list[int] = []
    for i in range(40):
        car_visible = i < 8 or i >= 16  # first car for 2 s, 2 s of nothing, then a second car
        step = tracker.update(
            box if car_visible else none, score if car_visible else np.zeros(0), SIZE, stamp=i * step_ns
        )
        ended.extend(step.ended)
        seen.extend(t.track_id for t in step.active if t.track_id not in seen)
    assert [(t.track_id, t.end_reason) for t in ended] == [(1, "lost")]
    assert ended[0].last_frame - 1 < 8 + 5  # ended within ~1 s (4 frames) of its last sighting
    assert seen == [1, 2]
    # Without stamps (all 0) the frame count alone applies, as before.
    ids2 = itertools.count(1)
    frames_only = ByteTracker(params, lambda: next(ids2))
    for i in range(40):
        visible = i < 8 or i >= 16
        frames_only.update(box if visible else none, score if visible else np.zeros(0), SIZE)
    assert [t.track_id for t in frames_only.tracks] == [1]


def test_flicker_below_new_track_threshold_starts_nothing() -> None:
    ids = itertools.count(1)
    tracker = ByteTracker(ByteTrackParams(), lambda: next(ids))
    for _ in range(10):
        step = tracker.update(np.array([[10.0, 10, 50, 50]]), np.array([0.55]), SIZE)
        assert not step.active
    assert not tracker.tracks


@pytest.mark.parametrize("n", [10, 30])
def test_dense_traffic(n: int) -> None:
    frames = simulate(traffic(n, 300, SIZE), 300, SIZE)
    metrics, _, _ = run(frames)
    assert metrics["mota"] >= 0.95
    assert metrics["num_switches"] <= 1


def test_kalman_learns_constant_velocity() -> None:
    mean, cov = kalman.initiate(np.array([[100.0, 200.0, 1.5, 80.0], [500.0, 300.0, 2.0, 40.0]]))
    for step in range(1, 40):
        mean, cov = kalman.predict(mean, cov)
        z = np.array([[100.0 + 5 * step, 200.0, 1.5, 80.0], [500.0, 300.0 - 2 * step, 2.0, 40.0]])
        mean, cov = kalman.update(mean, cov, z)
    assert mean[0, 4] == pytest.approx(5.0, abs=0.1)
    assert mean[1, 5] == pytest.approx(-2.0, abs=0.1)
    # Covariances stay symmetric positive definite.
    assert np.allclose(cov, cov.transpose(0, 2, 1))
    assert (np.linalg.eigvalsh(cov) > 0).all()


def test_kalman_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(3)
    z0 = np.column_stack(
        (rng.uniform(0, 1000, 5), rng.uniform(0, 1000, 5), rng.uniform(1, 3, 5), rng.uniform(20, 90, 5))
    )
    mean, cov = kalman.predict(*kalman.initiate(z0))
    z1 = z0 + rng.normal(0, 2, z0.shape)
    batch_mean, batch_cov = kalman.update(mean, cov, z1)
    for i in range(5):
        m, c = kalman.update(mean[i : i + 1], cov[i : i + 1], z1[i : i + 1])
        assert np.allclose(m[0], batch_mean[i])
        assert np.allclose(c[0], batch_cov[i])


def test_geometry() -> None:
    a = np.array([[0.0, 0, 10, 10]])
    b = np.array([[5.0, 0, 15, 10], [20.0, 20, 30, 30]])
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([50 / 150, 0.0])
    assert containment_matrix(np.array([[2.0, 2, 4, 4]]), a)[0, 0] == 1.0
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 2)
    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    assert point_in_polygon((5, 5), square)
    assert not point_in_polygon((15, 5), square)
    line = ((0.0, 5.0), (10.0, 5.0))
    assert crossing(*line, (5, 0), (5, 10)) == -crossing(*line, (5, 10), (5, 0)) != 0
    assert crossing(*line, (5, 0), (5, 4)) == 0
    assert crossing(*line, (15, 0), (15, 10)) == 0  # beyond the segment's end
