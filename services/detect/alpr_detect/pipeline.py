"""The detection pipeline of one batch: plates (and vehicles, when a vehicle model is configured).

Split in stages so the service can check the shared-memory slot right after the pixels were read:
`prepare` (letterbox every frame into the batch), `infer` (one backend call per model), `finish`
(decode, NMS, rescale, refine). `detect` runs all three for images already in memory (tests, bench).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alpr_detect.detections import Detections
from alpr_detect.detector import Image, Prepared, YoloDetector
from alpr_detect.refine import SecondPass, shrink_boxes


@dataclass(frozen=True, slots=True)
class RefineConfig:
    mode: str = "shrink"  # none | shrink | second-pass
    width: float = 0.92
    height: float = 0.75


@dataclass
class Inferred:
    plates: Sequence[Detections]
    vehicles: Sequence[Detections] | None
    inference_s: float


class DetectionPipeline:
    def __init__(
        self,
        plates: YoloDetector,
        *,
        refine: RefineConfig | None = None,
        second_pass: SecondPass | None = None,
        vehicles: YoloDetector | None = None,
    ) -> None:
        self.plates = plates
        self.vehicles = vehicles
        self.refine = refine or RefineConfig()
        if self.refine.mode == "second-pass" and second_pass is None:
            raise ValueError("refine mode second-pass needs a SecondPass")
        self.second_pass = second_pass

    @property
    def needs_pixels_after_inference(self) -> bool:
        """True when `finish` reads the frames again (second-pass crops)."""
        return self.refine.mode == "second-pass"

    def prepare(
        self, images: Sequence[Image], after_each: Callable[[int], None] | None = None
    ) -> tuple[Prepared, Prepared | None]:
        plate_batch = self.plates.prepare(images, after_each=after_each)
        vehicle_batch = None
        if self.vehicles is not None:
            vehicle_batch = self.vehicles.prepare(images)
        return plate_batch, vehicle_batch

    def infer_and_decode(self, plate_batch: Prepared, vehicle_batch: Prepared | None) -> list[Detections]:
        found = self.plates.decode(self.plates.infer(plate_batch), plate_batch.letterboxes)
        if self.vehicles is not None and vehicle_batch is not None:
            vehicles = self.vehicles.decode(self.vehicles.infer(vehicle_batch), vehicle_batch.letterboxes)
            found = [Detections.concat([p, v]) for p, v in zip(found, vehicles, strict=True)]
        return found

    def finish(self, found: Sequence[Detections], images: Sequence[Image] | None = None) -> list[Detections]:
        """Refine plate boxes. `images` are needed for second-pass refinement only."""
        refined = list(found)
        if self.refine.mode == "second-pass" and self.second_pass is not None and images is not None:
            refined = self.second_pass.refine(images, refined)
        if self.refine.mode in ("shrink", "second-pass"):
            refined = [self._shrink(d) for d in refined]
        return refined

    def _shrink(self, dets: Detections) -> Detections:
        if not len(dets):
            return dets
        plate_rows = np.asarray([dets.label_of(i) == "plate" for i in range(len(dets))], dtype=bool)
        boxes = dets.boxes.copy()
        boxes[plate_rows] = shrink_boxes(boxes[plate_rows], self.refine.width, self.refine.height)
        return Detections(boxes, dets.scores, dets.class_ids, dets.labels, dets.frame)

    def detect(self, images: Sequence[Image]) -> list[Detections]:
        out: list[Detections] = []
        step = max(1, self.plates.backend.max_batch)
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            plate_batch, vehicle_batch = self.prepare(chunk)
            out.extend(self.finish(self.infer_and_decode(plate_batch, vehicle_batch), chunk))
        return out
