"""ByteTrack (Zhang et al., ECCV 2022) for one camera and one family of objects, without I/O.

Every detection box is used: high-score boxes continue tracks first (IoU, optionally weighted by score),
then low-score boxes — often the same vehicle half hidden or blurred — continue the tracks that are still
unmatched, instead of being thrown away. A constant-velocity Kalman filter (`kalman`) predicts each track,
which carries a track through a few frames of occlusion (`lost_track_buffer`).

Why our own and not `supervision.ByteTrack` or `trackers`: see the module's section in BENCHMARKS.md —
in short, the same algorithm with batched Kalman updates runs several times faster per frame, the tracks
expose what the camera layer needs (which detection continued which track, why a track ended), and the
dependency is `lap` alone. Assignment uses `lap.lapjv` with a cost limit, as ByteTrack's reference code.

Differences from the reference implementation, on purpose:
- track ids are given when a track is confirmed (second detection), so ids are dense and never wasted on
  one-frame flickers; the id source is the caller's (unique across a camera's trackers and restarts);
- a lost track whose predicted centre left the frame ends at once (`end_reason="left_frame"`) instead of
  waiting out the buffer, so downstream stages can finalise a read promptly;
- each track has its own `max_lost` (frames) and `max_lost_ns` (time), which the caller may change (a
  parked vehicle is worth waiting for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import lap
import numpy as np
import numpy.typing as npt

from alpr_track import kalman
from alpr_track.geometry import iou_matrix

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
EndReason = Literal["lost", "left_frame", "shutdown"]

_EMPTY_INT: IntArray = np.empty(0, dtype=np.intp)


@dataclass(frozen=True)
class ByteTrackParams:
    """Named ByteTrack parameters (defaults: the paper's MOT17 settings). Built from `ByteTrackSettings`."""

    high_score_thresh: float = 0.5
    low_score_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    confirm_match_iou: float = 0.3
    lost_track_buffer: int = 30
    # A lost track also ends once this long (in the callers' `stamp` units, ns) has passed since it was
    # last seen; 0 = frames only. Counting frames alone made the buffer depend on how fast detect runs:
    # at 4 processed frames/s, 30 frames is 7.5 s, long enough to hand a track to the next car.
    lost_track_max_ns: int = 0
    fuse_score: bool = True
    # Buffered IoU (C-BIoU): boxes are enlarged by this share of their size on each side for matching
    # only, so a small, fast object (a plate) still overlaps its prediction. 0 = the paper's plain IoU.
    match_expand: float = 0.0


def expand(boxes: Array, by: float) -> Array:
    """Boxes grown by `by` × their width/height on each side (same centre)."""
    if by == 0.0 or boxes.shape[0] == 0:
        return boxes
    w = (boxes[:, 2] - boxes[:, 0]) * by
    h = (boxes[:, 3] - boxes[:, 1]) * by
    return np.stack((boxes[:, 0] - w, boxes[:, 1] - h, boxes[:, 2] + w, boxes[:, 3] + h), axis=1)


@dataclass(eq=False)
class Track:
    """One tracked object. `det_index` is the detection (index into the last `update`'s input) that
    continued it this frame, or -1."""

    track_id: int  # 0 until confirmed
    start_frame: int
    last_frame: int
    score: float
    box: tuple[float, float, float, float]  # last measured box (not the prediction)
    confirmed: bool = False
    lost: bool = False
    hits: int = 1
    det_index: int = -1
    max_lost: int = 30
    max_lost_ns: int = 0  # the time bound (see ByteTrackParams.lost_track_max_ns); 0 = frames only
    end_reason: EndReason | None = None
    first_stamp: int = 0  # the caller's `stamp` of the frame with the first detection (e.g. capture time)
    last_stamp: int = 0  # the caller's `stamp` of the frame with the latest detection
    user: object = field(default=None, repr=False)  # the caller's per-track state


@dataclass
class StepResult:
    active: list[Track]  # confirmed tracks continued by a detection this frame
    started: list[Track]  # confirmed this frame (also in `active`)
    ended: list[Track]  # removed this frame; each has `end_reason`


def _without(items: IntArray, positions: IntArray) -> IntArray:
    """`items` minus the entries at `positions` (cheaper than np.setdiff1d for these small arrays)."""
    if not positions.size:
        return items
    keep = np.ones(items.shape[0], dtype=bool)
    keep[positions] = False
    return items[keep]


def _assign(cost: Array, limit: float) -> tuple[IntArray, IntArray]:
    """Minimum-cost matching keeping only pairs with cost <= limit: (rows, cols)."""
    if cost.size == 0:
        return _EMPTY_INT, _EMPTY_INT
    _, x, _ = lap.lapjv(cost, extend_cost=True, cost_limit=limit)
    rows = np.flatnonzero(x >= 0)
    return rows, x[rows].astype(np.intp)


class ByteTracker:
    """Call `update` once per frame with that frame's boxes (N,4 xyxy) and scores (N,)."""

    def __init__(self, params: ByteTrackParams, next_id: Callable[[], int]) -> None:
        self.params = params
        self._next_id = next_id
        self.frame_id = 0
        self._stamp = 0
        self.tracks: list[Track] = []
        self._mean: Array = np.zeros((0, 8))
        self._cov: Array = np.zeros((0, 8, 8))

    def predicted_boxes(self) -> Array:
        """Current state of every track as xyxy boxes (after the last update)."""
        return kalman.xyah_to_xyxy(self._mean[:, :4])

    def update(
        self, boxes: Array, scores: Array, frame_size: tuple[int, int] | None = None, stamp: int = 0
    ) -> StepResult:
        """Advance one frame. `frame_size` (width, height) lets lost tracks that left the frame end early;
        `stamp` (e.g. the capture time) is remembered as a new track's `first_stamp`."""
        self.frame_id += 1
        self._stamp = stamp
        n = len(self.tracks)
        if n:
            lost_mask = np.fromiter((t.lost for t in self.tracks), dtype=bool, count=n)
            # A lost track stops growing or shrinking: its height velocity is zeroed (reference code).
            self._mean[lost_mask, 7] = 0.0
            self._mean, self._cov = kalman.predict(self._mean, self._cov)
        matched_t, matched_d, newly_lost, failed_unconfirmed, rest_high = self._associate(boxes, scores)
        started = self._apply(matched_t, matched_d, boxes, scores)
        for ti in newly_lost.tolist():
            self.tracks[ti].lost = True
        ended = self._remove(failed_unconfirmed, frame_size)
        started.extend(self._spawn(rest_high, boxes, scores, stamp))
        active = [t for t in self.tracks if t.confirmed and t.det_index >= 0]
        return StepResult(active=active, started=started, ended=ended)

    def _associate(
        self, boxes: Array, scores: Array
    ) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
        """ByteTrack's three matching rounds on the predicted boxes. Returns matched (track, detection)
        index pairs, tracks lost this frame, unconfirmed tracks not seen again, and unclaimed high boxes."""
        p = self.params
        tracks = self.tracks
        n = len(tracks)
        pred = expand(kalman.xyah_to_xyxy(self._mean[:, :4]), p.match_expand) if n else np.zeros((0, 4))
        boxes = expand(boxes, p.match_expand)  # for matching only; tracks keep the measured boxes
        high = np.flatnonzero(scores >= p.high_score_thresh)
        low = np.flatnonzero((scores >= p.low_score_thresh) & (scores < p.high_score_thresh))
        confirmed = np.fromiter((t.confirmed for t in tracks), dtype=bool, count=n)
        pool = np.flatnonzero(confirmed)
        unconfirmed = np.flatnonzero(~confirmed)

        # 1) confirmed tracks (tracked or lost) ↔ high-score detections.
        iou = iou_matrix(pred[pool], boxes[high])
        sim = iou * scores[high][None, :] if p.fuse_score else iou
        rows, cols = _assign(1.0 - sim, 1.0 - p.match_iou)
        rest_t = _without(pool, rows)
        rest_high = _without(high, cols)

        # 2) tracks that were being tracked until now ↔ low-score detections (plain IoU).
        if rest_t.size:
            was_tracked = np.fromiter((not tracks[i].lost for i in rest_t), dtype=bool, count=rest_t.size)
            second = rest_t[was_tracked]
        else:
            second = _EMPTY_INT
        rows2, cols2 = _assign(1.0 - iou_matrix(pred[second], boxes[low]), 1.0 - p.low_match_iou)
        newly_lost = _without(second, rows2)

        # 3) unconfirmed tracks (one detection so far) ↔ the high-score detections still unclaimed.
        iou3 = iou_matrix(pred[unconfirmed], boxes[rest_high])
        sim3 = iou3 * scores[rest_high][None, :] if p.fuse_score else iou3
        rows3, cols3 = _assign(1.0 - sim3, 1.0 - p.confirm_match_iou)
        failed_unconfirmed = _without(unconfirmed, rows3)
        matched_t = np.concatenate((pool[rows], second[rows2], unconfirmed[rows3]))
        matched_d = np.concatenate((high[cols], low[cols2], rest_high[cols3]))
        rest_high = _without(rest_high, cols3)
        return matched_t, matched_d, newly_lost, failed_unconfirmed, rest_high

    def _apply(self, mt: IntArray, md: IntArray, boxes: Array, scores: Array) -> list[Track]:
        """Kalman-correct every matched track at once; returns the tracks confirmed by this frame."""
        tracks = self.tracks
        for track in tracks:
            track.det_index = -1
        started: list[Track] = []
        if not mt.size:
            return started
        self._mean[mt], self._cov[mt] = kalman.update(
            self._mean[mt], self._cov[mt], kalman.xyxy_to_xyah(boxes[md])
        )
        for ti, di in zip(mt.tolist(), md.tolist(), strict=True):
            track = tracks[ti]
            track.det_index = di
            track.lost = False
            track.last_frame = self.frame_id
            track.last_stamp = self._stamp
            track.hits += 1
            track.score = float(scores[di])
            b = boxes[di]
            track.box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            if not track.confirmed:
                track.confirmed = True
                track.track_id = self._next_id()
                started.append(track)
        return started

    def _remove(self, failed_unconfirmed: IntArray, frame_size: tuple[int, int] | None) -> list[Track]:
        """Drop unconfirmed tracks not seen again and lost tracks past their buffer or out of the frame."""
        tracks = self.tracks
        keep = np.ones(len(tracks), dtype=bool)
        keep[failed_unconfirmed] = False
        ended: list[Track] = []
        for ti, track in enumerate(tracks):
            if not track.lost:
                continue
            max_ns = track.max_lost_ns
            if self.frame_id - track.last_frame > track.max_lost or (
                max_ns and self._stamp - track.last_stamp > max_ns
            ):
                track.end_reason = "lost"
            elif frame_size is not None:
                cx, cy = self._mean[ti, 0], self._mean[ti, 1]
                if not (0.0 <= cx < frame_size[0] and 0.0 <= cy < frame_size[1]):
                    track.end_reason = "left_frame"
            if track.end_reason is not None:
                keep[ti] = False
                ended.append(track)
        if not keep.all():
            self._mean = self._mean[keep]
            self._cov = self._cov[keep]
            self.tracks = [t for t, k in zip(tracks, keep.tolist(), strict=True) if k]
        return ended

    def _spawn(self, rest_high: IntArray, boxes: Array, scores: Array, stamp: int) -> list[Track]:
        """New tracks from unclaimed confident detections; on the very first frame they are confirmed."""
        fresh = rest_high[scores[rest_high] >= self.params.new_track_thresh]
        started: list[Track] = []
        if not fresh.size:
            return started
        mean, cov = kalman.initiate(kalman.xyxy_to_xyah(boxes[fresh]))
        self._mean = np.concatenate((self._mean, mean))
        self._cov = np.concatenate((self._cov, cov))
        first = self.frame_id == 1
        for di in fresh.tolist():
            b = boxes[di]
            track = Track(
                track_id=self._next_id() if first else 0,
                start_frame=self.frame_id,
                last_frame=self.frame_id,
                score=float(scores[di]),
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                confirmed=first,
                det_index=di if first else -1,
                max_lost=self.params.lost_track_buffer,
                max_lost_ns=self.params.lost_track_max_ns,
                first_stamp=stamp,
                last_stamp=stamp,
            )
            if first:
                started.append(track)
            self.tracks.append(track)
        return started

    def end_all(self, reason: EndReason = "shutdown") -> list[Track]:
        """Remove every track (service stopping, camera gone); returns the confirmed ones."""
        ended = [t for t in self.tracks if t.confirmed]
        for track in ended:
            track.end_reason = reason
        self.tracks = []
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        return ended
