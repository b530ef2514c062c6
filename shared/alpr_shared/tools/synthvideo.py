"""Synthetic test videos: a slow camera pan and zoom over a still photo, encoded with OpenCV's FFmpeg.

No traffic video is available offline; this turns the labelled photos into moving footage for the
transport demo, benchmarks and end-to-end tests. Without a photo, a textured pattern is used.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt


def _pattern(height: int, width: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    img = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.putText(
        img, "ALPR TEST 123", (width // 8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 6
    )
    return np.asarray(img, dtype=np.uint8)


def make_pan_video(
    out_path: Path,
    *,
    image: Path | None = None,
    seconds: float = 4.0,
    fps: float = 25.0,
    width: int = 1280,
    height: int = 720,
) -> Path:
    """Write an mp4 (mp4v) of a pan/zoom over `image` (or a pattern) and return its path."""
    if image is not None:
        still = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if still is None:
            raise ValueError(f"cannot read image {image}")
    else:
        still = _pattern(height, width)
    # Upscale so that a 70 % crop still covers the output size without black borders.
    scale = max(width / (0.7 * still.shape[1]), height / (0.7 * still.shape[0]), 1.0)
    big = cv2.resize(still, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out_path} (no mp4v encoder?)")
    frames = max(1, round(seconds * fps))
    bh, bw = big.shape[:2]
    try:
        for i in range(frames):
            t = i / max(1, frames - 1)
            crop = 0.95 - 0.25 * t  # zoom in from 95 % to 70 % of the photo
            ch, cw = int(bh * crop), int(bw * crop)
            y0 = int((bh - ch) * (0.5 + 0.4 * (t - 0.5)))
            x0 = int((bw - cw) * t)
            frame = cv2.resize(big[y0 : y0 + ch, x0 : x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
            writer.write(frame)
    finally:
        writer.release()
    return out_path
