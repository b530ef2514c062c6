"""The one canonical detection structure every backend adapts into.

`Detections` holds the boxes (frame pixels, x1 y1 x2 y2), scores and class ids of one frame, with the
class names and the frame they came from. Backends return raw tensors; `yolo.decode` turns them into
this; the service turns this into the wire `FrameDetections`. Tracking never sees a backend type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from alpr_shared.schemas import Box, Detection, FrameRef, ObjectClass

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# Class names this pipeline speaks (schemas.ObjectClass); model class ids map onto them.
OBJECT_CLASSES: tuple[ObjectClass, ...] = ("plate", "car", "truck", "bus", "motorcycle")


def _empty_boxes() -> FloatArray:
    return np.zeros((0, 4), dtype=np.float32)


def _empty_scores() -> FloatArray:
    return np.zeros((0,), dtype=np.float32)


def _empty_ids() -> IntArray:
    return np.zeros((0,), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Detections:
    """Everything found on one frame. Arrays are parallel: row i of `boxes` has `scores[i]` and
    `class_ids[i]`, and `labels[class_ids[i]]` is its pipeline class name."""

    boxes: FloatArray = field(default_factory=_empty_boxes)
    scores: FloatArray = field(default_factory=_empty_scores)
    class_ids: IntArray = field(default_factory=_empty_ids)
    labels: tuple[ObjectClass, ...] = ("plate",)
    frame: FrameRef | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.class_ids.shape != (n,):
            raise ValueError(
                f"Detections arrays disagree: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"class_ids {self.class_ids.shape}"
            )
        if n and (int(self.class_ids.min()) < 0 or int(self.class_ids.max()) >= len(self.labels)):
            raise ValueError(f"class ids {np.unique(self.class_ids)} outside labels {self.labels}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, index: npt.NDArray[np.bool_] | IntArray) -> Detections:
        return Detections(
            self.boxes[index], self.scores[index], self.class_ids[index], self.labels, self.frame
        )

    def with_frame(self, frame: FrameRef | None) -> Detections:
        return Detections(self.boxes, self.scores, self.class_ids, self.labels, frame)

    def label_of(self, i: int) -> ObjectClass:
        return self.labels[int(self.class_ids[i])]

    def to_messages(self) -> list[Detection]:
        """Wire form (schemas.Detection), boxes rounded to 0.1 px."""
        out: list[Detection] = []
        for i in range(len(self)):
            x1, y1, x2, y2 = (round(float(v), 1) for v in self.boxes[i])
            out.append(
                Detection(
                    box=Box(x1, y1, x2, y2), score=round(float(self.scores[i]), 4), label=self.label_of(i)
                )
            )
        return out

    @classmethod
    def concat(cls, parts: Sequence[Detections], frame: FrameRef | None = None) -> Detections:
        """Merge the detections of several models on one frame (e.g. plates and vehicles), relabelled
        onto one label table."""
        labels: list[ObjectClass] = []
        for part in parts:
            for name in part.labels:
                if name not in labels:
                    labels.append(name)
        boxes = [p.boxes for p in parts]
        scores = [p.scores for p in parts]
        ids = [np.asarray([labels.index(p.labels[c]) for c in p.class_ids], dtype=np.int64) for p in parts]
        if not parts:
            return cls(frame=frame)
        return cls(
            np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
            np.concatenate(scores).astype(np.float32),
            np.concatenate(ids).astype(np.int64),
            tuple(labels),
            frame,
        )
