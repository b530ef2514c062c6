"""H.264 test footage: a camera pan over a still photo (or a pattern), encoded with PyAV's libx264.

For the ingest tests, the RTSP test server and `bench/ingest.py`: real H.264 in a real container, with
the GOP and frame rate the caller asks for, so decoders see what a camera or a recorder produces. The
frame number is drawn into each frame (top-left) so a reader can tell frames apart by eye.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt


def _pattern(height: int, width: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    img = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.putText(
        img, "ALPR 7TST123", (width // 8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 6
    )
    return np.asarray(img, dtype=np.uint8)


def pan_frames(
    count: int, *, width: int, height: int, image: Path | None = None
) -> list[npt.NDArray[np.uint8]]:
    """`count` BGR frames of a slow pan and zoom over `image` (or a pattern)."""
    still = cv2.imread(str(image), cv2.IMREAD_COLOR) if image is not None else None
    if still is None:
        still = _pattern(height, width)
    scale = max(width / (0.7 * still.shape[1]), height / (0.7 * still.shape[0]), 1.0)
    big = cv2.resize(still, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    bh, bw = big.shape[:2]
    frames = []
    for i in range(count):
        t = i / max(1, count - 1)
        crop = 0.95 - 0.25 * t
        ch, cw = int(bh * crop), int(bw * crop)
        y0 = int((bh - ch) * (0.5 + 0.4 * (t - 0.5)))
        x0 = int((bw - cw) * t)
        frame = cv2.resize(big[y0 : y0 + ch, x0 : x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
        cv2.putText(frame, f"{i:05d}", (16, 48), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 255, 255), 3)
        frames.append(np.asarray(frame, dtype=np.uint8))
    return frames


def write_h264(
    out_path: Path,
    *,
    seconds: float = 2.0,
    fps: int = 25,
    width: int = 640,
    height: int = 360,
    gop: int | None = None,
    image: Path | None = None,
    preset: str = "veryfast",
    distinct: int = 50,
) -> Path:
    """Encode a pan video as H.264 in the container named by the suffix (.mp4, .mkv, .avi, .h264).

    `distinct` frames are rendered and then cycled, so long videos cost encoding time, not rendering.
    `gop`: frames between key frames (default: one per second).
    """
    count = max(1, round(seconds * fps))
    frames = pan_frames(min(count, distinct), width=width, height=height, image=image)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out_path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop or fps
        # No B-frames: what IP cameras send, and what an RTSP re-stream of this file keeps in order.
        stream.options = {"preset": preset, "tune": "zerolatency", "bf": "0"}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out_path
