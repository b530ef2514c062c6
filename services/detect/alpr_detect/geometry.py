"""Pure box geometry of the detectors: letterboxing, rescaling back to frame pixels, IoU and NMS.

Everything here is a pure function of numpy arrays (no I/O, no model, no settings), so the unit tests
check it against hand-computed cases. Boxes are float arrays of shape (N, 4) as x1, y1, x2, y2 in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
LETTERBOX_FILL = 114  # the grey ultralytics pads with; the detector was trained on this padding


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the network input: scale first, then pad (left, top)."""

    scale: float
    pad_x: float
    pad_y: float
    src_height: int
    src_width: int


def letterbox_params(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Letterbox:
    """The scale and padding that fit `src_hw` inside `dst_hw` keeping the aspect ratio, centred."""
    src_h, src_w = src_hw
    dst_h, dst_w = dst_hw
    if src_h <= 0 or src_w <= 0 or dst_h <= 0 or dst_w <= 0:
        raise ValueError(f"sizes must be positive, got src {src_hw} and dst {dst_hw}")
    scale = min(dst_h / src_h, dst_w / src_w)
    new_w = round(src_w * scale)
    new_h = round(src_h * scale)
    return Letterbox(scale, (dst_w - new_w) / 2, (dst_h - new_h) / 2, src_h, src_w)


def letterbox(
    image: npt.NDArray[np.uint8], dst_hw: tuple[int, int], out: npt.NDArray[np.uint8] | None = None
) -> tuple[npt.NDArray[np.uint8], Letterbox]:
    """Resize `image` (H×W×C) into `dst_hw` keeping its aspect ratio, padded with grey.

    `out` (dst_h × dst_w × C, uint8) is filled in place when given: the batcher reuses one buffer per
    batch slot, so a frame read from shared memory is copied once, already resized.
    """
    params = letterbox_params((image.shape[0], image.shape[1]), dst_hw)
    dst_h, dst_w = dst_hw
    new_w = round(params.src_width * params.scale)
    new_h = round(params.src_height * params.scale)
    channels = image.shape[2] if image.ndim == 3 else 1
    if out is None:
        out = np.empty((dst_h, dst_w, channels), dtype=np.uint8)
    left = round(params.pad_x - 0.1)
    top = round(params.pad_y - 0.1)
    out[:top] = LETTERBOX_FILL
    out[top + new_h :] = LETTERBOX_FILL
    out[top : top + new_h, :left] = LETTERBOX_FILL
    out[top : top + new_h, left + new_w :] = LETTERBOX_FILL
    region = out[top : top + new_h, left : left + new_w]
    if (new_h, new_w) == image.shape[:2]:
        region[...] = image.reshape(region.shape)
    else:
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        region[...] = resized.reshape(region.shape)
    # The integer offsets actually used are what boxes must be shifted back by.
    return out, Letterbox(params.scale, float(left), float(top), params.src_height, params.src_width)


def rescale_boxes(boxes: FloatArray, lb: Letterbox) -> FloatArray:
    """Boxes in network-input pixels → boxes in source-frame pixels, clipped to the frame."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] -= lb.pad_x
    out[:, [1, 3]] -= lb.pad_y
    out /= lb.scale
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, lb.src_width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, lb.src_height)
    return out


def xywh_to_xyxy(boxes: FloatArray) -> FloatArray:
    """Centre x, centre y, width, height → x1, y1, x2, y2."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    half_w = b[:, 2] / 2
    half_h = b[:, 3] / 2
    return np.stack([b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h], axis=1)


def box_area(boxes: FloatArray) -> FloatArray:
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    result: FloatArray = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return result


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of boxes `a` (N×4) and `b` (M×4) → N×M; 0 where a box has no area."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out: FloatArray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)
    return out


def nms(
    boxes: FloatArray,
    scores: FloatArray,
    iou_threshold: float,
    class_ids: IntArray | None = None,
    max_detections: int | None = None,
) -> IntArray:
    """Greedy non-maximum suppression; returns the indices kept, best score first.

    A box is suppressed by a higher-scoring kept box of the same class whose IoU with it is *greater*
    than `iou_threshold`. With `class_ids`, classes never suppress each other.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    if boxes.shape[0] == 0:
        return np.empty((0,), dtype=np.int64)
    if class_ids is not None:
        # Offsetting each class far apart makes one pass do per-class NMS.
        offset = (np.asarray(class_ids, dtype=np.float32).reshape(-1, 1)) * (float(boxes.max()) + 1.0)
        boxes = boxes + offset
    order = np.argsort(-scores, kind="stable")
    areas = box_area(boxes)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if max_detections is not None and len(keep) >= max_detections:
            break
        rest = order[1:]
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
