"""Best-shot scoring: how worth reading one crop of a plate track is, from pixels and geometry alone.

Owns: copying the plate region out of a frame (so the frame slot can be released) and scoring it on plate
height, sharpness (variance of the Laplacian), detector confidence, whether the frame edge cuts it, and
whether its shape is plate-like (a skewed or partial plate has an odd aspect). Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from alpr_shared.schemas import Box
from alpr_shared.settings import OcrShotSettings

Image = npt.NDArray[np.uint8]
SHARPNESS_HEIGHT = 32  # sharpness is measured on the crop scaled to this height


@dataclass(frozen=True, slots=True)
class Shot:
    """One candidate crop of a plate track (a private copy of the pixels)."""

    crop: Image
    score: float
    captured_at_ns: int
    box: Box
    detector_score: float
    seq: int = 0  # order of arrival within the track


def crop_plate(frame: npt.NDArray[np.generic], box: Box, margin: float) -> Image | None:
    """A copy of the plate region (grown by `margin` x its height on each side), or None if empty."""
    height, width = frame.shape[:2]
    grow = (box.y2 - box.y1) * margin
    x1 = max(0, int(np.floor(box.x1 - grow)))
    y1 = max(0, int(np.floor(box.y1 - grow)))
    x2 = min(width, int(np.ceil(box.x2 + grow)))
    y2 = min(height, int(np.ceil(box.y2 + grow)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    region = frame[y1:y2, x1:x2]
    if region.dtype != np.uint8:
        return None
    return np.ascontiguousarray(region).copy()


def sharpness(crop: Image) -> float:
    """Variance of the Laplacian of the grey crop at a fixed height of `SHARPNESS_HEIGHT` px, after a
    light Gaussian blur: low for motion or focus blur, and neither the plate's size nor sensor noise
    (which the Laplacian alone mistakes for detail) moves it much."""
    if crop.ndim == 3 and crop.shape[2] == 3:
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    else:
        grey = crop.reshape(crop.shape[0], crop.shape[1])
    h, w = grey.shape
    width = max(4, round(w * SHARPNESS_HEIGHT / max(1, h)))
    grey = cv2.resize(grey, (width, SHARPNESS_HEIGHT), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(grey, (3, 3), 0)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def is_cut(box: Box, frame_width: int, frame_height: int, margin_px: float) -> bool:
    return (
        box.x1 <= margin_px
        or box.y1 <= margin_px
        or box.x2 >= frame_width - margin_px
        or box.y2 >= frame_height - margin_px
    )


def score_shot(
    *,
    box: Box,
    frame_width: int,
    frame_height: int,
    detector_score: float,
    sharp: float,
    settings: OcrShotSettings,
) -> float:
    """Score in [0, 1]; 0 means "never read this" (too small)."""
    height = box.y2 - box.y1
    width = box.x2 - box.x1
    if height < settings.min_height_px or width <= 0:
        return 0.0
    total = settings.weight_height + settings.weight_sharpness + settings.weight_confidence
    if total <= 0:
        return 0.0
    size_term = min(1.0, height / settings.full_height_px)
    sharp_term = min(1.0, sharp / settings.full_sharpness)
    conf_term = min(1.0, max(0.0, detector_score))
    score = (
        settings.weight_height * size_term
        + settings.weight_sharpness * sharp_term
        + settings.weight_confidence * conf_term
    ) / total
    if is_cut(box, frame_width, frame_height, settings.edge_margin_px):
        score *= settings.edge_penalty
    aspect = width / height
    if aspect < settings.min_aspect:
        score *= aspect / settings.min_aspect
    elif aspect > settings.max_aspect:
        score *= settings.max_aspect / aspect
    return float(min(1.0, max(0.0, score)))


def make_shot(
    frame: npt.NDArray[np.generic],
    box: Box,
    *,
    detector_score: float,
    captured_at_ns: int,
    settings: OcrShotSettings,
    seq: int = 0,
) -> Shot | None:
    """Copy and score the plate region of `frame`; None if the box holds no pixels."""
    crop = crop_plate(frame, box, settings.crop_margin)
    if crop is None:
        return None
    score = score_shot(
        box=box,
        frame_width=frame.shape[1],
        frame_height=frame.shape[0],
        detector_score=detector_score,
        sharp=sharpness(crop),
        settings=settings,
    )
    return Shot(crop, score, captured_at_ns, box, detector_score, seq)


def encode_jpeg(crop: Image, *, quality: int, max_side: int) -> bytes | None:
    """A small JPEG of a crop (longest side capped at `max_side`)."""
    h, w = crop.shape[:2]
    longest = max(h, w)
    if longest > max_side:
        scale = max_side / longest
        crop = cv2.resize(
            crop, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )  # type: ignore[assignment]
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return bytes(buf) if ok else None
