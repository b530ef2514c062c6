"""Box refinement for the plate detector, whose boxes are loose (median IoU 0.63-0.66 with labels).

Two variants, measured in BENCHMARKS.md (## detect):
- `shrink_boxes`: a calibration of the model's systematic looseness, pure geometry: scale width and
  height around the centre (its boxes are ~1.1x too wide and ~1.3-1.5x too tall).
- `SecondPass`: run the same detector again on an upscaled crop around each box, where the plate is
  large, and take the overlapping box with the best score; then shrink. It also re-finds small plates
  at full resolution. It costs one more (small) inference per plate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alpr_detect.detections import Detections, FloatArray
from alpr_detect.detector import Image, YoloDetector
from alpr_detect.geometry import iou_matrix


def shrink_boxes(boxes: FloatArray, width: float, height: float) -> FloatArray:
    """Scale each box's width and height by the factors, keeping its centre."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    half_w = (b[:, 2] - b[:, 0]) * width / 2
    half_h = (b[:, 3] - b[:, 1]) * height / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)


def crop_window(box: FloatArray, frame_hw: tuple[int, int], context: float) -> tuple[int, int, int, int]:
    """A square window around `box`, `context` times its larger side, clipped to the frame."""
    h, w = frame_hw
    cx = float(box[0] + box[2]) / 2
    cy = float(box[1] + box[3]) / 2
    side = max(float(box[2] - box[0]), float(box[3] - box[1])) * context
    x0 = int(max(0, np.floor(cx - side / 2)))
    y0 = int(max(0, np.floor(cy - side / 2)))
    x1 = int(min(w, np.ceil(cx + side / 2)))
    y1 = int(min(h, np.ceil(cy + side / 2)))
    return x0, y0, x1, y1


@dataclass
class SecondPass:
    """Re-detect each plate on a crop around it at `crop_detector`'s input size."""

    crop_detector: YoloDetector
    context: float = 1.6  # window side = 1.6 × the box's larger side: the whole plate plus some margin
    min_overlap: float = 0.1  # the re-found box must overlap the first one at least this much

    def refine(self, images: Sequence[Image], found: Sequence[Detections]) -> list[Detections]:
        crops: list[Image] = []
        owners: list[tuple[int, int, tuple[int, int, int, int]]] = []
        for i, (image, dets) in enumerate(zip(images, found, strict=True)):
            for j in range(len(dets)):
                if dets.label_of(j) != "plate":
                    continue
                window = crop_window(dets.boxes[j], (image.shape[0], image.shape[1]), self.context)
                x0, y0, x1, y1 = window
                if x1 - x0 < 2 or y1 - y0 < 2:
                    continue
                crops.append(image[y0:y1, x0:x1])
                owners.append((i, j, window))
        if not crops:
            return list(found)
        again = self.crop_detector.detect(crops)
        boxes = [d.boxes.copy() for d in found]
        for (i, j, (x0, y0, _, _)), dets in zip(owners, again, strict=True):
            if not len(dets):
                continue
            candidates = dets.boxes + np.asarray([x0, y0, x0, y0], dtype=np.float32)
            overlap = iou_matrix(found[i].boxes[j : j + 1], candidates)[0]
            weighted = overlap * dets.scores
            best = int(np.argmax(weighted))
            if overlap[best] >= self.min_overlap:
                boxes[i][j] = candidates[best]
        return [
            Detections(b, d.scores, d.class_ids, d.labels, d.frame) for b, d in zip(boxes, found, strict=True)
        ]
