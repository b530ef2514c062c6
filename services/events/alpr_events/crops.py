"""Size caps for the JPEG crops an event carries (the server shows them; Kafka records must stay small).

A crop within its cap is passed through untouched. A larger one is decoded and re-encoded, first at a
lower quality and then smaller, until it fits; a crop that cannot be decoded or never fits is left out
(the caller counts it). Never reads or writes files.
"""

from __future__ import annotations

import cv2
import numpy as np

_QUALITIES = (80, 65, 50)
_MIN_SIDE = 16


def cap_jpeg(data: bytes | None, max_bytes: int) -> tuple[bytes | None, str]:
    """(the crop to put in the event, what happened: "kept" | "recoded" | "dropped" | "none")."""
    if not data:
        return None, "none"
    if len(data) <= max_bytes:
        return data, "kept"
    if max_bytes <= 0:
        return None, "dropped"
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None, "dropped"
    while min(image.shape[:2]) >= _MIN_SIDE:
        for quality in _QUALITIES:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and buf.size <= max_bytes:
                return buf.tobytes(), "recoded"
        height, width = image.shape[:2]
        image = cv2.resize(
            image, (max(1, width * 3 // 4), max(1, height * 3 // 4)), interpolation=cv2.INTER_AREA
        )
    return None, "dropped"
