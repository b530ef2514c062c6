"""Plate-detection accuracy on labelled photos (the OpenALPR benchmark sets `us/` and `eu/`).

Each `NAME.jpg` has `NAME.txt`: `file x y w h PLATE` (one plate per photo). A label counts as found when
some detected plate box overlaps it with IoU ≥ the threshold; every plate box that matches no label at
IoU ≥ 0.3 counts as a false box. Used by the tests (the recall target) and by `bench/detect.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alpr_detect.detections import Detections, FloatArray
from alpr_detect.geometry import iou_matrix

FALSE_BOX_IOU = 0.3  # a predicted box overlapping no label this much is a false box


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    boxes: FloatArray  # (K, 4) x1 y1 x2 y2
    plates: tuple[str, ...]


def load_labelled_set(directory: Path) -> list[LabelledImage]:
    """Every `*.jpg` with its `.txt` label in `directory`, sorted by name."""
    if not directory.is_dir():
        raise FileNotFoundError(f"labelled set {directory} does not exist")
    out: list[LabelledImage] = []
    for image in sorted(directory.glob("*.jpg")):
        label = image.with_suffix(".txt")
        if not label.is_file():
            continue
        boxes: list[list[float]] = []
        plates: list[str] = []
        for line in label.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue
            x, y, w, h = (float(v) for v in parts[1:5])
            boxes.append([x, y, x + w, y + h])
            plates.append(parts[5] if len(parts) > 5 else "")
        out.append(LabelledImage(image, np.asarray(boxes, np.float32).reshape(-1, 4), tuple(plates)))
    return out


@dataclass(frozen=True, slots=True)
class RecallReport:
    images: int
    labels: int
    found_50: int  # labels matched at IoU >= 0.5
    found_30: int
    false_boxes: int
    median_iou: float  # of each label's best-overlapping box (0 when none)

    @property
    def recall_50(self) -> float:
        return self.found_50 / self.labels if self.labels else 0.0

    @property
    def recall_30(self) -> float:
        return self.found_30 / self.labels if self.labels else 0.0

    @property
    def false_per_image(self) -> float:
        return self.false_boxes / self.images if self.images else 0.0

    def summary(self) -> str:
        return (
            f"recall@0.5 {self.recall_50:.1%} ({self.found_50}/{self.labels}), "
            f"recall@0.3 {self.recall_30:.1%}, false boxes/img {self.false_per_image:.2f}, "
            f"median IoU {self.median_iou:.2f}"
        )


def score(samples: Sequence[LabelledImage], results: Sequence[Detections]) -> RecallReport:
    labels = found_50 = found_30 = false_boxes = 0
    best_ious: list[float] = []
    for sample, dets in zip(samples, results, strict=True):
        plate_rows = np.asarray([dets.label_of(i) == "plate" for i in range(len(dets))], dtype=bool)
        pred = dets.boxes[plate_rows] if len(dets) else np.zeros((0, 4), np.float32)
        ious = iou_matrix(sample.boxes, pred)
        labels += sample.boxes.shape[0]
        for row in ious:
            best = float(row.max()) if row.size else 0.0
            best_ious.append(best)
            found_50 += best >= 0.5
            found_30 += best >= 0.3
        if pred.shape[0]:
            matched = ious.max(axis=0) >= FALSE_BOX_IOU if ious.size else np.zeros(pred.shape[0], bool)
            false_boxes += int((~matched).sum())
    return RecallReport(
        images=len(samples),
        labels=labels,
        found_50=found_50,
        found_30=found_30,
        false_boxes=false_boxes,
        median_iou=float(np.median(best_ious)) if best_ious else 0.0,
    )


def evaluate(
    samples: Sequence[LabelledImage],
    detect: Callable[[list[np.ndarray]], list[Detections]],
    read: Callable[[str], np.ndarray],
    chunk: int = 8,
) -> RecallReport:
    """Run `detect` over the images (in chunks) and score the plate boxes against the labels."""
    results: list[Detections] = []
    for start in range(0, len(samples), chunk):
        images = [read(str(s.path)) for s in samples[start : start + chunk]]
        results.extend(detect(images))
    return score(samples, results)
