"""A YOLO-style detector on a backend: letterbox a batch, infer once, decode, rescale to frame pixels.

`YoloDetector` is backend-agnostic (ONNX Runtime or TensorRT behind the `Backend` protocol) and works on
numpy images (H×W×3, BGR as OpenCV and the frame store hold them). It allocates its input buffers once
per batch size and reuses them: a frame read in place from shared memory is resized straight into the
batch, with no copy of the full frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from alpr_detect.backends.base import Backend
from alpr_detect.detections import Detections, IntArray
from alpr_detect.geometry import Letterbox, letterbox, rescale_boxes
from alpr_detect.yolo import decode_one
from alpr_shared.schemas import ObjectClass

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    input_size: int = 640  # network input side (square); the model was trained at 640
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 50
    labels: tuple[ObjectClass, ...] = ("plate",)
    # Model class id → index into `labels`, -1 = ignore the class. None: identity.
    class_map: tuple[int, ...] | None = None


@dataclass
class Prepared:
    """A letterboxed batch ready for the backend; `letterboxes[i]` maps its boxes back to frame i."""

    tensor: npt.NDArray[np.float32]
    letterboxes: list[Letterbox]


@dataclass
class YoloDetector:
    backend: Backend
    config: DetectorConfig = field(default_factory=DetectorConfig)
    # Per batch size: one uint8 NHWC staging buffer (letterbox target) and one float32 NCHW tensor.
    _staging: dict[int, tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]] = field(
        default_factory=dict, repr=False
    )

    def _buffers(self, n: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        bufs = self._staging.get(n)
        if bufs is None:
            s = self.config.input_size
            bufs = (np.empty((n, s, s, 3), np.uint8), np.empty((n, 3, s, s), np.float32))
            self._staging[n] = bufs
        return bufs

    def prepare(
        self, images: Sequence[Image], *, after_each: Callable[[int], None] | None = None
    ) -> Prepared:
        """Letterbox every image into the batch buffers. `after_each(i)` runs once image i has been
        read (the service checks there that the shared-memory slot was not overwritten meanwhile)."""
        n = len(images)
        staging, tensor = self._buffers(n)
        size = self.config.input_size
        letterboxes: list[Letterbox] = []
        for i, image in enumerate(images):
            _, lb = letterbox(image, (size, size), out=staging[i])
            letterboxes.append(lb)
            if after_each is not None:
                after_each(i)
        # BGR uint8 NHWC → RGB float32 NCHW in [0, 1], written into the reused tensor.
        for i in range(n):
            for c in range(3):
                np.multiply(staging[i, :, :, 2 - c], np.float32(1 / 255), out=tensor[i, c], casting="unsafe")
        return Prepared(tensor, letterboxes)

    def infer(self, prepared: Prepared) -> npt.NDArray[np.float32]:
        return self.backend.infer(prepared.tensor)

    def decode(self, raw: npt.NDArray[np.float32], letterboxes: Sequence[Letterbox]) -> list[Detections]:
        cfg = self.config
        class_map: IntArray | None = None
        if cfg.class_map is not None:
            class_map = np.asarray(cfg.class_map, dtype=np.int64)
        out: list[Detections] = []
        for i, lb in enumerate(letterboxes):
            boxes, scores, ids = decode_one(
                raw[i],
                conf_threshold=cfg.conf_threshold,
                iou_threshold=cfg.iou_threshold,
                max_detections=cfg.max_detections,
                class_map=class_map,
            )
            out.append(Detections(rescale_boxes(boxes, lb), scores, ids, cfg.labels))
        return out

    def detect(self, images: Sequence[Image]) -> list[Detections]:
        """Detect on any number of images, in chunks of the backend's max batch."""
        results: list[Detections] = []
        step = max(1, self.backend.max_batch)
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            prepared = self.prepare(chunk)
            results.extend(self.decode(self.infer(prepared), prepared.letterboxes))
        return results


def read_bgr(path: str) -> Image:
    """An image file as BGR uint8 (the frame store's layout); raises FileNotFoundError if unreadable."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(image, dtype=np.uint8)
