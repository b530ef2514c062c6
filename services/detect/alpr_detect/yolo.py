"""Adapter from a YOLOv8-style raw output tensor to `Detections` (decode, threshold, NMS).

The exported ultralytics detectors emit `(batch, 4 + classes, anchors)`: centre x, centre y, width,
height in network-input pixels, then one sigmoid score per class (no objectness). Pure functions only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alpr_detect.geometry import FloatArray, IntArray, nms, xywh_to_xyxy


def decode_one(
    raw: npt.NDArray[np.float32],
    *,
    conf_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_map: IntArray | None = None,
) -> tuple[FloatArray, FloatArray, IntArray]:
    """One image's `(4 + classes, anchors)` output → (boxes xyxy in input pixels, scores, class ids).

    `class_map` maps model class ids to output class ids, and -1 drops a class (a COCO model's
    "person", say): only the classes the pipeline cares about survive.
    """
    if raw.ndim != 2 or raw.shape[0] < 5:
        raise ValueError(f"expected a (4 + classes, anchors) tensor, got shape {raw.shape}")
    class_scores = raw[4:]
    if class_map is not None:
        wanted = np.flatnonzero(class_map >= 0)
        class_scores = class_scores[wanted]
    best = class_scores.argmax(axis=0)
    score = class_scores[best, np.arange(class_scores.shape[1])]
    keep = score > conf_threshold
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    boxes = xywh_to_xyxy(raw[:4, keep].T)
    scores = score[keep].astype(np.float32)
    ids = best[keep].astype(np.int64)
    if class_map is not None:
        ids = class_map[np.flatnonzero(class_map >= 0)][ids].astype(np.int64)
    kept = nms(boxes, scores, iou_threshold, class_ids=ids, max_detections=max_detections)
    return boxes[kept], scores[kept], ids[kept]
