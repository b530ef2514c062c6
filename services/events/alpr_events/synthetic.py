"""Synthetic plate reads for the benchmark and the tests: plausible plates of a region, and `PlateRead`
messages shaped like the OCR coordinator's (per-character alternatives, track metadata, a tiny JPEG).
Deterministic for a given `random.Random`; nothing here touches the network or the disk."""

from __future__ import annotations

import functools
import random
import string

import cv2
import numpy as np

from alpr_shared.schemas import Box, CharCandidate, PlateRead


@functools.cache
def tiny_jpeg() -> bytes:
    """A small real JPEG (what a best-shot crop looks like to the events service: opaque bytes)."""
    image = np.zeros((24, 96, 3), dtype=np.uint8)
    image[4:20, 4:92] = 255
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:  # pragma: no cover - OpenCV always encodes a plain array
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def plate_for(pattern: str, rng: random.Random) -> str:
    """A plate for a fixed pattern of L (letter) / N (digit) positions, e.g. "LLLNLNN"."""
    return "".join(rng.choice(string.ascii_uppercase if c == "L" else string.digits) for c in pattern)


def alternatives_for(text: str, confidence: float = 0.9) -> list[list[CharCandidate]]:
    """One list per character: the character itself first, then a weaker look-alike."""
    look = {"0": "O", "O": "0", "1": "I", "I": "1", "8": "B", "B": "8", "5": "S", "S": "5"}
    out = []
    for c in text:
        cands = [CharCandidate(c, confidence)]
        if c in look:
            cands.append(CharCandidate(look[c], round(1.0 - confidence, 3)))
        out.append(cands)
    return out


def make_read(
    camera_id: str,
    track_id: int,
    text: str,
    *,
    first_seen_ns: int,
    last_seen_ns: int | None = None,
    confidence: float = 0.9,
    final: bool = False,
    reads: int = 1,
    alternatives: list[list[CharCandidate]] | None = None,
    plate_jpeg: bytes | None = None,
) -> PlateRead:
    return PlateRead(
        camera_id=camera_id,
        track_id=track_id,
        final=final,
        text=text,
        confidence=confidence,
        alternatives=alternatives if alternatives is not None else alternatives_for(text, confidence),
        reads=reads,
        first_seen_ns=first_seen_ns,
        last_seen_ns=last_seen_ns if last_seen_ns is not None else first_seen_ns,
        best_shot_ns=last_seen_ns if last_seen_ns is not None else first_seen_ns,
        plate_box=Box(100, 200, 220, 240),
        plate_jpeg=plate_jpeg if plate_jpeg is not None else tiny_jpeg(),
        vehicle_class="car",
        vehicle_box=Box(50, 100, 400, 380),
        direction="approaching",
    )
