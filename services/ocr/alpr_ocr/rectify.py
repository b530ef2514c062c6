"""Crop rectification before recognition: find the plate's row of characters, level it, and cut away
what lies above and below it (state names, slogans, frame text, the car body).

The detector's boxes (even refined) are a few pixels loose or tight and never rotated; the recogniser reads
a 48-pixel-high line, so every row of distractor text and every degree of skew costs it. The characters of a
plate are the one row of similar, tall, separate blobs in the crop: connected components of a binarised
crop (both polarities: dark on light and light on dark), filtered by size and shape, grouped by height and
by a fitted line through their centres. That line gives the skew; the tops and bottoms of the characters
give the band. Pure functions on numpy images: no model, no I/O.

Never cuts sideways (an edge character that is missed as a blob must not be cut off), and returns the crop
unchanged when it cannot find at least `min_chars` characters in a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
WORK_HEIGHT = 96  # the crop is analysed at this height: characters are then ~40-70 px tall


@dataclass(frozen=True, slots=True)
class RectifyOptions:
    enabled: bool = True
    min_chars: int = 3  # fewer character-like blobs in a row: leave the crop as it is
    # Kept above and below the characters, as a share of their height: CTC needs a little context.
    margin: float = 0.25
    max_angle: float = 20.0  # degrees; a steeper "row" is not a plate's characters
    # A character is between these shares of the crop's height (plate text fills 35-90% of a plate crop).
    min_height: float = 0.25
    max_height: float = 0.95
    # Kept left and right of the outermost characters, as a share of their height; None: never cut
    # sideways (a character missed as a blob would be cut off).
    side_margin: float | None = None


@dataclass(frozen=True, slots=True)
class Band:
    """The row of characters, in crop pixels: a line y = slope·x + intercept through the characters'
    centres, and how far their tops and bottoms lie from it."""

    slope: float
    intercept: float
    half_height: float  # median character half height
    top: float  # the band's top edge (offset from the centre line, < 0)
    bottom: float  # its bottom edge (> 0)
    chars: int
    x_min: float
    x_max: float

    @property
    def angle(self) -> float:
        return math.degrees(math.atan(self.slope))


def _components(
    binary: npt.NDArray[Any], height: int, width: int, opts: RectifyOptions
) -> npt.NDArray[np.float64]:
    """Character-like blobs of a binary image: rows of (x, y, w, h)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros((0, 4))
    s = stats[1:].astype(np.float64)
    x, y, w, h, area = s[:, 0], s[:, 1], s[:, 2], s[:, 3], s[:, 4]
    keep = (
        (h >= opts.min_height * height)
        & (h <= opts.max_height * height)
        & (w <= 1.2 * h)  # taller than wide (allowing W, M)
        & (w >= 0.08 * h)  # I and 1 are thin, not hairlines
        & (area >= 0.12 * w * h)  # a stroke shape, not a frame corner
        & (area <= 0.95 * w * h)  # not a solid block
        & (x > 0)  # blobs touching the left/right edge are frame or background
        & (x + w < width)
    )
    return np.stack([x[keep], y[keep], w[keep], h[keep]], axis=1)


def _row(blobs: npt.NDArray[np.float64], opts: RectifyOptions) -> Band | None:
    """The largest group of blobs of similar height on one line."""
    if len(blobs) < opts.min_chars:
        return None
    heights = blobs[:, 3]
    best: npt.NDArray[np.bool_] | None = None
    for ref in np.unique(heights):  # each blob's height as a candidate character height
        same = (heights >= 0.75 * ref) & (heights <= 1.3 * ref)
        if best is None or same.sum() > best.sum():
            best = same
    if best is None or best.sum() < opts.min_chars:
        return None
    chosen = blobs[best]
    cx = chosen[:, 0] + chosen[:, 2] / 2
    cy = chosen[:, 1] + chosen[:, 3] / 2
    half = float(np.median(chosen[:, 3])) / 2
    inliers = np.ones(len(chosen), dtype=bool)
    slope, intercept = 0.0, float(np.median(cy))
    for _ in range(2):  # fit, drop blobs off the line (stacked small letters, bolts), refit
        if inliers.sum() < opts.min_chars:
            return None
        if np.ptp(cx[inliers]) > 0:
            slope, intercept = (float(v) for v in np.polyfit(cx[inliers], cy[inliers], 1))
        residual = np.abs(cy - (slope * cx + intercept))
        inliers = residual <= 0.35 * half * 2
    if inliers.sum() < opts.min_chars or abs(math.degrees(math.atan(slope))) > opts.max_angle:
        return None
    c = chosen[inliers]
    line = slope * (c[:, 0] + c[:, 2] / 2) + intercept
    top = float(np.min(c[:, 1] - line))
    bottom = float(np.max(c[:, 1] + c[:, 3] - line))
    return Band(
        slope,
        intercept,
        half,
        top,
        bottom,
        int(inliers.sum()),
        float(c[:, 0].min()),
        float((c[:, 0] + c[:, 2]).max()),
    )


def find_band(crop: Image, opts: RectifyOptions | None = None) -> Band | None:
    """The row of characters of a BGR or grey plate crop (coordinates of the crop), or None."""
    opts = opts or RectifyOptions()
    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape[:2]
    if h < 8 or w < 8:
        return None
    scale = WORK_HEIGHT / h
    work = cv2.resize(grey, (max(8, round(w * scale)), WORK_HEIGHT), interpolation=cv2.INTER_LINEAR)
    work = cv2.GaussianBlur(work, (3, 3), 0)
    block = (WORK_HEIGHT // 2) | 1
    best: Band | None = None
    for polarity in (cv2.THRESH_BINARY_INV, cv2.THRESH_BINARY):
        binary = cv2.adaptiveThreshold(work, 255, cv2.ADAPTIVE_THRESH_MEAN_C, polarity, block, 7)
        band = _row(_components(binary, WORK_HEIGHT, work.shape[1], opts), opts)
        if band is not None and (best is None or band.chars > best.chars):
            best = band
    if best is None:
        return None
    inv = 1.0 / scale
    return Band(
        best.slope,
        best.intercept * inv,
        best.half_height * inv,
        best.top * inv,
        best.bottom * inv,
        best.chars,
        best.x_min * inv,
        best.x_max * inv,
    )


def rectify(crop: Image, opts: RectifyOptions | None = None) -> Image:
    """The crop levelled and cut to its row of characters (± `margin`), or the crop itself."""
    opts = opts or RectifyOptions()
    if not opts.enabled:
        return crop
    band = find_band(crop, opts)
    if band is None:
        return crop
    h, w = crop.shape[:2]
    cx = w / 2
    cy = band.slope * cx + band.intercept
    char_h = band.bottom - band.top
    pad = opts.margin * char_h
    y0 = cy + band.top - pad
    y1 = cy + band.bottom + pad
    if abs(band.angle) >= 1.0:
        matrix = cv2.getRotationMatrix2D((cx, cy), band.angle, 1.0)
        crop = cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[assignment]
    top = max(0, math.floor(y0))
    bottom = min(h, math.ceil(y1))
    if bottom - top < 8:
        return crop
    left, right = 0, w
    if opts.side_margin is not None:
        side = opts.side_margin * char_h
        left = max(0, math.floor(band.x_min - side))
        right = min(w, math.ceil(band.x_max + side))
    return np.ascontiguousarray(crop[top:bottom, left:right])
