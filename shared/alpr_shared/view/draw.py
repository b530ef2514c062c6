"""Drawing the annotation onto a frame: a pure function of numpy arrays and an `Overlay`, nothing else.

The input frame is never modified (it may be a read-only view of shared memory); the result is a new
array, scaled down to `max_width` first so that text and lines keep their size on screen whatever the
camera's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
BoxKind = Literal["plate", "detection", "vehicle"]

# BGR. Magenta for tracked plates: it almost never occurs in street scenes, so a test (or a person) can
# tell annotation from picture. Amber for plate detections not (yet) part of a track, blue for vehicles.
COLOURS: dict[BoxKind, tuple[int, int, int]] = {
    "plate": (255, 0, 255),
    "detection": (0, 200, 255),
    "vehicle": (255, 150, 0),
}
HEADER_BG = (32, 32, 32)
TEXT_FG = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class BoxOverlay:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the frame's own pixels
    kind: BoxKind
    track_id: int | None = None
    text: str | None = None  # plate text read so far
    confidence: float | None = None  # of `text`
    final: bool = False  # the track ended and this is its final read
    score: float | None = None  # detector score (shown when there is no text)


@dataclass(frozen=True)
class Overlay:
    camera_id: str
    boxes: list[BoxOverlay] = field(default_factory=list)
    fps_in: float | None = None  # frames published by ingest per second
    fps_detect: float | None = None  # frames with detections per second
    note: str | None = None  # e.g. "no detections: detect not running?"


def box_label(box: BoxOverlay) -> str:
    """The text shown above a box: `#id PLATE 93%`, `#id …` before a read, `plate 0.81` untracked."""
    parts: list[str] = []
    if box.track_id is not None:
        parts.append(f"#{box.track_id}")
    if box.text:
        parts.append(box.text)
        if box.confidence is not None:
            parts.append(f"{box.confidence * 100:.0f}%")
        if box.final:
            parts.append("final")
    elif box.track_id is not None:
        parts.append("…" if box.kind == "plate" else box.kind)
    else:
        parts.append(box.kind if box.kind != "detection" else "plate")
        if box.score is not None:
            parts.append(f"{box.score:.2f}")
    # OpenCV's Hershey fonts have no ellipsis; three dots read the same.
    return " ".join(parts).replace("…", "...")


def _fit(pixels: npt.NDArray[np.generic], max_width: int) -> tuple[Image, float]:
    frame: Image = np.asarray(pixels, dtype=np.uint8)
    height, width = frame.shape[:2]
    scale = min(1.0, max_width / width) if width else 1.0
    if frame.ndim == 2:
        frame = np.asarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    elif frame.shape[2] == 4:
        frame = np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        out: Image = np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    else:
        out = frame.copy()
    return np.ascontiguousarray(out, dtype=np.uint8), scale


def _label(
    img: Image, text: str, at: tuple[int, int], colour: tuple[int, int, int], font_scale: float
) -> None:
    x, y = at
    thickness = max(1, round(font_scale * 2))
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
    top = y - th - base - 4
    if top < 0:  # no room above the box: put the label inside its top edge
        top = y
    x = int(min(max(0, x), max(0, img.shape[1] - tw - 4)))
    cv2.rectangle(img, (x, top), (x + tw + 4, top + th + base + 4), colour, cv2.FILLED)
    cv2.putText(img, text, (x + 2, top + th + 2), _FONT, font_scale, TEXT_FG, thickness, cv2.LINE_AA)


def annotate(frame: npt.NDArray[np.generic], overlay: Overlay, *, max_width: int = 1280) -> Image:
    """A new BGR image: `frame` scaled to at most `max_width`, with every box of `overlay` (colour by
    kind, label with track id, plate text and confidence) and a header line with the camera and fps."""
    img, scale = _fit(frame, max_width)
    height, width = img.shape[:2]
    font_scale = max(0.4, min(1.0, width / 1600))
    line = max(2, round(width / 480))
    # Vehicles first so that plates (inside them) are drawn on top.
    order = sorted(overlay.boxes, key=lambda b: {"vehicle": 0, "detection": 1, "plate": 2}[b.kind])
    for box in order:
        x1, y1, x2, y2 = (round(v * scale) for v in box.box)
        x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2, width - 1))
        y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2, height - 1))
        if x2 <= x1 or y2 <= y1:
            continue
        colour = COLOURS[box.kind]
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, line if box.kind != "detection" else max(1, line // 2))
        _label(img, box_label(box), (x1, y1), colour, font_scale)
    header = [overlay.camera_id]
    if overlay.fps_in is not None:
        header.append(f"in {overlay.fps_in:.1f} fps")
    if overlay.fps_detect is not None:
        header.append(f"detect {overlay.fps_detect:.1f} fps")
    tracked = sum(1 for b in overlay.boxes if b.kind == "plate" and b.track_id is not None)
    header.append(f"{tracked} plate track{'s' if tracked != 1 else ''}")
    if overlay.note:
        header.append(overlay.note)
    text = "  |  ".join(header)
    (_, th), base = cv2.getTextSize(text, _FONT, font_scale, 1)
    cv2.rectangle(img, (0, 0), (width, th + base + 8), HEADER_BG, cv2.FILLED)
    cv2.putText(img, text, (4, th + 4), _FONT, font_scale, TEXT_FG, 1, cv2.LINE_AA)
    return img


def encode_jpeg(img: Image, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf)
