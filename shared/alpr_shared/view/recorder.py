"""`alpr view --save-video OUT.mp4`: the annotated frames of one camera into a video file.

Frames are stamped with their capture time (milliseconds from the first), so the file plays at the
camera's real pace even though the view draws at a variable rate. H.264 when FFmpeg has libx264, else
MPEG-4 part 2. The file is finalised on `close()` (SIGTERM / Ctrl-C of the view); a killed view leaves a
file without its index.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


class VideoRecorder:
    """Owns one output container; `write()` from one thread at a time, then `close()`."""

    def __init__(self, path: Path, *, nominal_fps: float = 15.0) -> None:
        self.path = path
        self.nominal_fps = nominal_fps
        self.frames = 0
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._t0_ns: int | None = None
        self._last_pts = -1
        self.codec = ""

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container: Any = av.open(str(self.path), mode="w")
        # yuv420p needs even sizes.
        self._size = (width - width % 2, height - height % 2)
        for codec, options in (("libx264", {"crf": "23", "preset": "veryfast"}), ("mpeg4", {"qscale": "4"})):
            try:
                stream = container.add_stream(codec, rate=round(self.nominal_fps), options=options)
            except (av.error.FFmpegError, ValueError):
                continue
            stream.width, stream.height = self._size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, 1000)
            self._container, self._stream, self.codec = container, stream, codec
            return
        container.close()
        raise RuntimeError("this FFmpeg build has neither libx264 nor mpeg4")

    def write(self, image: Image, captured_at_ns: int) -> None:
        if self._container is None:
            self._open(image.shape[1], image.shape[0])
        if self._size is not None and (image.shape[1], image.shape[0]) != self._size:
            image = np.ascontiguousarray(cv2.resize(image, self._size, interpolation=cv2.INTER_AREA))
        if self._t0_ns is None:
            self._t0_ns = captured_at_ns
        pts = max(self._last_pts + 1, (captured_at_ns - self._t0_ns) // 1_000_000)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = pts
        frame.time_base = Fraction(1, 1000)
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None
