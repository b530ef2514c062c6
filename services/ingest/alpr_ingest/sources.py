"""Camera sources: open one configured source and yield decoded pictures, one at a time.

Every source here is blocking and used from its camera's own thread (FFmpeg and OpenCV release the GIL
while they decode). A source never touches the frame ring: it returns a `Picture` that knows its shape
and how to write itself into a destination array, so the runner can write it straight into a reserved
ring slot — the only copy of its pixels. Decoding is cheap to skip: `Decoded.picture()` converts the
pixels only when called, so frames dropped by the fps cap cost no colour conversion.

Kinds (`source_kind`): rtsp://, http(s):// (MJPEG or any stream FFmpeg reads), a video file, a V4L2
device (/dev/videoN, through OpenCV's V4L2 backend: PyAV's wheels carry no v4l2 input), and a folder of
images. The CPU decoder is FFmpeg through PyAV (chosen by measurement, see BENCHMARKS.md `## ingest`);
`decoder: gstreamer` is in `gst.py`.

Errors: `SourceError` (cannot open, connection lost) and `StallError` (no frame for
`stall_timeout_s`) end a session and the runner reconnects; `EndOfSource` is a file's normal end.
Corrupt packets and undecodable frames are counted in `SourceCounters` and skipped. Messages never
carry credentials: `scrub()` removes them from every error text that might quote the URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error
import cv2
import numpy as np
import numpy.typing as npt

from alpr_shared.logging import redact_url
from alpr_shared.settings import CameraSettings, RegionOfInterest

SourceKind = Literal["rtsp", "http", "file", "v4l2", "images"]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# A folder of images has no frame rate of its own: this one, unless the camera sets target_fps.
IMAGE_FOLDER_FPS = 25.0
# A file that declares no usable rate is paced at this one.
FALLBACK_FPS = 25.0

U8Array = npt.NDArray[np.uint8]


class SourceError(RuntimeError):
    """The source cannot be opened or read any more; the runner reconnects with backoff."""


class StallError(SourceError):
    """No frame arrived for the camera's `stall_timeout_s`."""


class EndOfSource(Exception):
    """A file or folder has no more frames (and is not looped)."""


@dataclass
class SourceCounters:
    """Counted by the source's thread, read by the status reporter (plain ints: GIL-atomic updates)."""

    decode_errors: int = 0
    corrupt_packets: int = 0


def source_kind(source: str) -> SourceKind:
    lowered = source.lower()
    if lowered.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lowered.startswith(("http://", "https://")):
        return "http"
    if lowered.startswith("/dev/video") or lowered.startswith("v4l2://"):
        return "v4l2"
    if "://" in source:
        raise SourceError(f"unsupported source scheme in {redact_url(source)!r}: use rtsp, http(s), a path")
    if Path(source).is_dir():
        return "images"
    return "file"


def source_url(camera: CameraSettings) -> str:
    """The source with the camera's username/password put into the URL (for connecting only)."""
    if not camera.username or "://" not in camera.source:
        return camera.source
    parts = urlsplit(camera.source)
    userinfo = quote(camera.username, safe="")
    if camera.password is not None:
        userinfo += ":" + quote(camera.password.get_secret_value(), safe="")
    netloc = f"{userinfo}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub(text: str, camera: CameraSettings) -> str:
    """`text` without the camera's credentials (FFmpeg's errors quote the URL they failed on)."""
    secrets = [source_url(camera), camera.source]
    parts = urlsplit(camera.source) if "://" in camera.source else None
    if parts is not None and parts.password:
        secrets.append(parts.password)
    if camera.password is not None:
        secret = camera.password.get_secret_value()
        secrets += [secret, quote(secret, safe="")]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, redact_url(secret) if "://" in secret else "***")
    return text


def roi_box(
    roi: RegionOfInterest | None, height: int, width: int, *, even: bool
) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the region of interest clipped to the frame (the whole frame when None).

    `even`: align to 2 pixels, as cropping 4:2:0 chroma planes needs.
    """
    if roi is None:
        return 0, 0, width, height
    x, y = min(roi.x, width - 1), min(roi.y, height - 1)
    w, h = min(roi.width, width - x), min(roi.height, height - y)
    if even:
        x, y, w, h = x & ~1, y & ~1, max(2, w & ~1), max(2, h & ~1)
    return x, y, w, h


class Picture(Protocol):
    shape: tuple[int, int, int]

    def write_into(self, dest: U8Array) -> None: ...


class BgrPicture:
    """Pixels already in BGR (OpenCV sources, formats other than 4:2:0): copied once into `dest`."""

    def __init__(self, bgr: U8Array) -> None:
        self.bgr = bgr
        self.shape = (int(bgr.shape[0]), int(bgr.shape[1]), 3)

    def write_into(self, dest: U8Array) -> None:
        np.copyto(dest, self.bgr, casting="no")


class I420Picture:
    """Planar 4:2:0 (what H.264/H.265 decoders produce), converted to BGR straight into `dest`: the
    colour conversion is the write, so no intermediate BGR frame exists. Uses BT.601 coefficients,
    like FFmpeg's swscale default."""

    def __init__(self, i420: U8Array, height: int, width: int) -> None:
        self.i420 = i420
        self.shape = (height, width, 3)

    def write_into(self, dest: U8Array) -> None:
        out = cv2.cvtColor(self.i420, cv2.COLOR_YUV2BGR_I420, dst=dest)
        if out is not dest and out.__array_interface__["data"][0] != dest.__array_interface__["data"][0]:
            np.copyto(dest, out)  # OpenCV allocated after all (it should not: shape and type match)


def crop_i420(i420: U8Array, height: int, width: int, box: tuple[int, int, int, int]) -> U8Array:
    """The I420 layout (h*3/2 × w) of an even-aligned crop of an I420 frame."""
    x, y, w, h = box
    luma = i420[:height]
    chroma = i420[height:].reshape(2, height // 2, width // 2)
    u = chroma[0, y // 2 : (y + h) // 2, x // 2 : (x + w) // 2]
    v = chroma[1, y // 2 : (y + h) // 2, x // 2 : (x + w) // 2]
    out = np.empty((h * 3 // 2, w), dtype=np.uint8)
    out[:h] = luma[y : y + h, x : x + w]
    out[h:].reshape(2, h // 2, w // 2)[0] = u
    out[h:].reshape(2, h // 2, w // 2)[1] = v
    return out


class Decoded(Protocol):
    """One decoded frame, not yet converted: `pts` (seconds, None if unknown), then `picture()`."""

    pts: float | None

    def picture(self) -> Picture: ...


@dataclass
class _AvDecoded:
    frame: av.VideoFrame
    pts: float | None
    roi: RegionOfInterest | None

    def picture(self) -> Picture:
        frame = self.frame
        height, width = frame.height, frame.width
        if frame.format.name == "yuv420p" and height % 2 == 0 and width % 2 == 0:
            i420 = np.asarray(frame.to_ndarray(), dtype=np.uint8)
            box = roi_box(self.roi, height, width, even=True)
            if box != (0, 0, width, height):
                return I420Picture(crop_i420(i420, height, width, box), box[3], box[2])
            return I420Picture(i420, height, width)
        bgr = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
        return BgrPicture(_crop(bgr, self.roi))


@dataclass
class _BgrDecoded:
    bgr: U8Array
    pts: float | None
    roi: RegionOfInterest | None

    def picture(self) -> Picture:
        return BgrPicture(_crop(self.bgr, self.roi))


def _crop(bgr: U8Array, roi: RegionOfInterest | None) -> U8Array:
    if roi is None:
        return bgr
    x, y, w, h = roi_box(roi, bgr.shape[0], bgr.shape[1], even=False)
    return bgr[y : y + h, x : x + w]


class FrameSource(Protocol):
    kind: SourceKind
    fps: float  # nominal frame rate (files: pacing; live: informational)
    live: bool
    counters: SourceCounters

    def frames(self) -> Iterator[Decoded]:
        """Decoded frames until the end (`EndOfSource`) or a failure (`SourceError`)."""
        ...

    def close(self) -> None: ...


class PyAVSource:
    """RTSP, HTTP and files through FFmpeg (PyAV).

    Timeouts are FFmpeg interrupts: opening may take `connect_timeout_s`, and a read that blocks longer
    than `stall_timeout_s` fails (a dead RTSP/UDP peer sends nothing, so only a timeout notices).
    """

    def __init__(self, camera: CameraSettings, kind: SourceKind) -> None:
        self.camera = camera
        self.kind = kind
        self.live = kind in ("rtsp", "http")
        self.counters = SourceCounters()
        options: dict[str, str] = {}
        if kind == "rtsp":
            options["rtsp_transport"] = camera.transport
            if camera.transport == "udp":
                options["buffer_size"] = str(4 << 20)  # room for a 4K key frame's burst of packets
        if kind == "file" and not Path(camera.source).is_file():
            raise SourceError(f"camera {camera.id}: video file {camera.source} does not exist")
        try:
            self._container = av.open(
                source_url(camera),
                options=options,
                timeout=(camera.connect_timeout_s, camera.stall_timeout_s),
            )
        except av.error.FFmpegError as exc:
            raise SourceError(scrub(f"camera {camera.id}: cannot open {kind} source: {exc}", camera)) from exc
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"camera {camera.id}: {redact_url(camera.source)} has no video stream")
        try:
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = camera.decoder_threads
            rate = self._stream.average_rate or self._stream.guessed_rate
            fps = float(rate) if rate else 0.0
            self.fps = fps if 0.0 < fps <= 240.0 else FALLBACK_FPS
        except BaseException:
            self._container.close()
            raise

    def frames(self) -> Iterator[Decoded]:
        roi = self.camera.roi
        while True:
            index = 0
            # A looped file's timestamps start again from 0: the pacer and the fps cap re-anchor on that.
            for frame in self._decode():
                pts = frame.time if frame.pts is not None else index / self.fps
                index += 1
                yield _AvDecoded(frame, pts, roi)
            if self.live:
                raise SourceError(f"camera {self.camera.id}: the stream ended (the server closed it)")
            if not self.camera.loop:
                raise EndOfSource
            if index == 0:
                raise SourceError(f"camera {self.camera.id}: the file has no decodable frame to loop")
            try:
                self._container.seek(0, stream=self._stream)
            except av.error.FFmpegError as exc:
                raise SourceError(
                    f"camera {self.camera.id}: cannot rewind the file to loop it: {exc}"
                ) from exc
            self._stream.codec_context.flush_buffers()

    def _decode(self) -> Iterator[av.VideoFrame]:
        stream = self._stream
        stall_s = self.camera.stall_timeout_s
        last_frame = time.monotonic()
        try:
            for packet in self._container.demux(stream):
                if packet.is_corrupt:
                    self.counters.corrupt_packets += 1
                try:
                    frames = stream.decode(packet)
                except av.error.ExitError:
                    raise  # a timeout: the session ends
                except av.error.FFmpegError:
                    self.counters.decode_errors += 1  # a corrupt packet: skip it, keep the stream
                    frames = []
                now = time.monotonic()
                clean = [f for f in frames if not f.is_corrupt]
                # A frame the decoder had to conceal (missing or damaged slices) would show OCR smeared
                # plates: skipped and counted like a packet that did not decode at all.
                self.counters.decode_errors += len(frames) - len(clean)
                if clean:
                    last_frame = now
                elif self.live and now - last_frame > stall_s:
                    # Packets keep coming but nothing decodes (garbage, a codec change): a stall too.
                    raise StallError(f"camera {self.camera.id}: no decodable frame for {stall_s:g}s")
                yield from clean
        except av.error.ExitError as exc:
            raise StallError(
                f"camera {self.camera.id}: no data for {self.camera.stall_timeout_s:g}s (read timed out)"
            ) from exc
        except av.error.FFmpegError as exc:
            raise SourceError(scrub(f"camera {self.camera.id}: read failed: {exc}", self.camera)) from exc

    def close(self) -> None:
        self._container.close()


class OpenCVSource:
    """V4L2 USB cameras through OpenCV's V4L2 backend (frames arrive as BGR)."""

    def __init__(self, camera: CameraSettings) -> None:
        self.camera = camera
        self.kind: SourceKind = "v4l2"
        self.live = True
        self.counters = SourceCounters()
        device = camera.source.removeprefix("v4l2://")
        index: int | str = int(device.removeprefix("/dev/video")) if device[10:].isdigit() else device
        self._cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"camera {camera.id}: cannot open V4L2 device {device}")
        if camera.target_fps:
            self._cap.set(cv2.CAP_PROP_FPS, camera.target_fps)
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps <= 240.0 else FALLBACK_FPS

    def frames(self) -> Iterator[Decoded]:
        while True:
            ok, frame = self._cap.read()
            if not ok:
                raise SourceError(f"camera {self.camera.id}: the V4L2 device stopped delivering frames")
            yield _BgrDecoded(np.asarray(frame, dtype=np.uint8), time.monotonic(), self.camera.roi)

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource:
    """Every image of a folder, in name order (for evaluation); unreadable files are counted, skipped."""

    def __init__(self, camera: CameraSettings) -> None:
        self.camera = camera
        self.kind: SourceKind = "images"
        self.live = False
        self.counters = SourceCounters()
        folder = Path(camera.source)
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise SourceError(
                f"camera {camera.id}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}"
            )
        self.fps = camera.target_fps or IMAGE_FOLDER_FPS

    def frames(self) -> Iterator[Decoded]:
        index = 0
        while True:
            for path in self.paths:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    self.counters.decode_errors += 1
                    continue
                yield _BgrDecoded(np.asarray(image, dtype=np.uint8), index / self.fps, self.camera.roi)
                index += 1
            if not self.camera.loop:
                raise EndOfSource

    def close(self) -> None:
        return


def open_source(camera: CameraSettings, *, gstreamer_python: Path) -> FrameSource:
    """Open the camera's source with its configured decoder (blocking: call from the camera's thread)."""
    kind = source_kind(camera.source)
    if camera.decoder == "gstreamer":
        from alpr_ingest.gst import GStreamerSource  # noqa: PLC0415 - only cameras that use it

        return GStreamerSource(camera, kind, python=gstreamer_python)
    if kind == "v4l2":
        return OpenCVSource(camera)
    if kind == "images":
        return ImageFolderSource(camera)
    return PyAVSource(camera, kind)
