"""The GStreamer decoder path: a pipeline per camera, hardware decode on NVIDIA where configured.

GStreamer's Python bindings (`gi`) come from the distribution (Debian's python3-gi, JetPack's), not from
PyPI, so the pipeline runs in a helper process on that interpreter (`ingest.gstreamer_python`, default
/usr/bin/python3): `<decode pipeline> ! videoconvert ! video/x-raw,format=BGR ! appsink`. The helper writes
each frame to its stdout as a 32-byte header (magic, width, height, row stride, pts) plus the rows; this
process reads the rows straight into a reserved ring slot (`readinto`), so the only copies are GStreamer's
conversion and the pipe. The configuration (pipeline with credentials) travels on the helper's stdin, never
on its command line (visible in `ps`).

Presets (`gstreamer_preset`), for RTSP and file sources:
- `jetson`: `nvv4l2decoder` (NVDEC on Jetson) → `nvvidconv` to system memory (BGRx) → `videoconvert`.
- `nvidia`: `nvh264dec` / `nvh265dec` (desktop GPUs, gst-plugins-bad's nvcodec) → `videoconvert`.
- `software`: `avdec_h264` / `avdec_h265` (gst-libav): the same pipeline shape without a GPU, which is
  what the tests here run.
`gstreamer_pipeline` replaces the whole decode part (source to raw video); `{location}` in it becomes
the source with credentials.
"""

from __future__ import annotations

import json
import select
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from alpr_ingest.sources import (
    BgrPicture,
    Decoded,
    EndOfSource,
    Picture,
    SourceCounters,
    SourceError,
    SourceKind,
    StallError,
    U8Array,
    _crop,
    scrub,
    source_url,
)
from alpr_shared.settings import CameraSettings

HEADER = struct.Struct("<4sIIIqq")  # magic, width, height, stride, pts (ns, -1 unknown), reserved
MAGIC = b"ALPF"
END_MAGIC = b"ALPE"
RTSP_LATENCY_MS = 200  # rtspsrc jitter buffer: enough to reorder UDP packets, small enough for live use
STOP_TIMEOUT_S = 5.0

DECODERS: dict[str, dict[str, str]] = {
    "jetson": {
        "h264": "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx",
        "h265": "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx",
    },
    "nvidia": {"h264": "nvh264dec", "h265": "nvh265dec"},
    "software": {"h264": "avdec_h264", "h265": "avdec_h265"},
}
# The GStreamer elements each preset needs (for `missing_elements`, and the tests' skip reasons).
PRESET_ELEMENTS: dict[str, dict[str, list[str]]] = {
    "jetson": {"h264": ["nvv4l2decoder", "nvvidconv"], "h265": ["nvv4l2decoder", "nvvidconv"]},
    "nvidia": {"h264": ["nvh264dec"], "h265": ["nvh265dec"]},
    "software": {"h264": ["avdec_h264"], "h265": ["avdec_h265"]},
}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def decode_pipeline(camera: CameraSettings, kind: SourceKind) -> str:
    """The decode part of the camera's pipeline (source to raw video), credentials included."""
    location = source_url(camera)
    if camera.gstreamer_pipeline is not None:
        return camera.gstreamer_pipeline.replace("{location}", _quote(location))
    preset = camera.gstreamer_preset
    if preset is None:
        raise SourceError(f"camera {camera.id}: decoder gstreamer needs a preset or a pipeline")
    codec = camera.codec
    decoder = DECODERS[preset][codec]
    if kind == "rtsp":
        protocols = "tcp" if camera.transport == "tcp" else "udp"
        head = (
            f"rtspsrc location={_quote(location)} protocols={protocols} latency={RTSP_LATENCY_MS} "
            f"timeout={int(camera.stall_timeout_s * 1e6)} ! rtp{codec}depay ! {codec}parse"
        )
    elif kind == "file":
        head = f"filesrc location={_quote(location)} ! parsebin ! {codec}parse"
    else:
        raise SourceError(
            f"camera {camera.id}: gstreamer_preset covers rtsp and file sources; "
            f"write a gstreamer_pipeline for a {kind} source"
        )
    return f"{head} ! {decoder}"


def missing_elements(preset: str, codec: str, python: Path) -> list[str]:
    """The preset's GStreamer elements that `python`'s GStreamer does not have (empty: all there)."""
    script = (
        "import sys, gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); "
        "print(' '.join(n for n in sys.argv[1:] if Gst.ElementFactory.find(n) is None))"
    )
    needed = PRESET_ELEMENTS[preset][codec]
    try:
        out = subprocess.run(
            [str(python), "-c", script, *needed], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"(GStreamer not usable from {python}: {exc})"]
    return out.stdout.split()


HELPER_SCRIPT = r"""
import json, os, struct, sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import Gst, GstApp, GstVideo

cfg = json.loads(sys.stdin.readline())
Gst.init(None)
HEADER = struct.Struct("<4sIIIqq")
out = os.fdopen(1, "wb", buffering=0)
drop = "true" if cfg["drop"] else "false"
desc = cfg["pipeline"] + (
    " ! videoconvert ! video/x-raw,format=BGR ! "
    f"appsink name=alprsink sync=false emit-signals=false max-buffers=4 drop={drop}"
)
try:
    pipeline = Gst.parse_launch(desc)
except Exception as exc:
    sys.stderr.write(f"invalid pipeline: {exc}\n")
    sys.exit(2)
sink = pipeline.get_by_name("alprsink")
bus = pipeline.get_bus()
if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
    msg = bus.timed_pop_filtered(0, Gst.MessageType.ERROR)
    err = msg.parse_error()[0].message if msg else "state change failed"
    sys.stderr.write(f"pipeline does not start: {err}\n")
    sys.exit(3)
code = 0
try:
    while True:
        sample = sink.try_pull_sample(200 * Gst.MSECOND)
        if sample is None:
            msg = bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
            if msg is not None and msg.type == Gst.MessageType.ERROR:
                err, dbg = msg.parse_error()
                sys.stderr.write(f"pipeline error: {err.message} ({dbg})\n")
                code = 4
                break
            if sink.is_eos() or (msg is not None and msg.type == Gst.MessageType.EOS):
                out.write(HEADER.pack(b"ALPE", 0, 0, 0, -1, 0))
                break
            continue
        info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
        buf = sample.get_buffer()
        ok, mapinfo = buf.map(Gst.MapFlags.READ)
        if not ok:
            continue
        try:
            stride = info.stride[0]
            pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else -1
            out.write(HEADER.pack(b"ALPF", info.width, info.height, stride, pts, 0))
            out.write(mapinfo.data[: stride * info.height])
        finally:
            buf.unmap(mapinfo)
except BrokenPipeError:
    pass
finally:
    pipeline.set_state(Gst.State.NULL)
sys.exit(code)
"""


class _PipePicture:
    """The next frame's rows, still in the pipe: `write_into` reads them straight into the slot."""

    def __init__(self, source: GStreamerSource, height: int, width: int) -> None:
        self._source = source
        self.shape = (height, width, 3)

    def write_into(self, dest: U8Array) -> None:
        self._source._read_exact_into(memoryview(dest.data).cast("B"))


@dataclass
class _GstDecoded:
    pts: float | None
    _picture: Picture

    def picture(self) -> Picture:
        return self._picture


class GStreamerSource:
    def __init__(self, camera: CameraSettings, kind: SourceKind, *, python: Path) -> None:
        self.camera = camera
        self.kind = kind
        self.live = kind in ("rtsp", "http", "v4l2")
        self.counters = SourceCounters()
        self.fps = camera.target_fps or 25.0
        if not python.exists():
            raise SourceError(
                f"camera {camera.id}: decoder gstreamer needs {python} with GStreamer's Python bindings "
                "(Debian: python3-gi); set ingest.gstreamer_python"
            )
        pipeline = decode_pipeline(camera, kind)
        # Live: drop in the helper rather than stall the pipeline; files not paced: deliver every frame.
        config = {"pipeline": pipeline, "drop": self.live}
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [str(python), "-c", HELPER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        if self._proc.stdin is None or self._proc.stdout is None:  # pragma: no cover - PIPE was asked for
            raise SourceError("GStreamer helper has no pipes")
        try:
            self._proc.stdin.write((json.dumps(config) + "\n").encode())
            self._proc.stdin.close()
        except BrokenPipeError:
            pass  # the helper died at once; the first read reports why
        self._out = self._proc.stdout
        self._fd = self._out.fileno()
        self._pending: _PipePicture | None = None
        self._first_timeout = camera.connect_timeout_s

    def _helper_error(self, what: str) -> SourceError:
        code = self._proc.poll()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-5:]
        detail = " | ".join(tail) or "no message"
        status = f"exit code {code}" if code is not None else "still running"
        return SourceError(
            scrub(f"camera {self.camera.id}: GStreamer {what} ({status}): {detail}", self.camera)
        )

    def _wait_readable(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self._fd], [], [], min(remaining, 0.5))
            if ready:
                return True

    def _read_exact_into(self, view: memoryview) -> None:
        got = 0
        total = len(view)
        while got < total:
            if not self._wait_readable(self.camera.stall_timeout_s):
                raise StallError(
                    f"camera {self.camera.id}: GStreamer frame incomplete for "
                    f"{self.camera.stall_timeout_s:g}s"
                )
            n = self._out.readinto(view[got:])  # type: ignore[attr-defined]  # raw FileIO
            if not n:
                raise self._helper_error("stopped mid-frame")
            got += n

    def frames(self) -> Iterator[Decoded]:
        header = bytearray(HEADER.size)
        first = True
        while True:
            if self._pending is not None:
                # The runner skipped the frame (fps cap): drain its rows from the pipe.
                h, w, _ = self._pending.shape
                self._pending = None
                self._read_exact_into(memoryview(bytearray(h * w * 3)))
            timeout = self._first_timeout if first else self.camera.stall_timeout_s
            if not self._wait_readable(timeout):
                if self._proc.poll() is not None:
                    raise self._helper_error("pipeline failed")
                what = "no first frame within" if first else "no frame for"
                limit = timeout
                raise StallError(f"camera {self.camera.id}: GStreamer pipeline gave {what} {limit:g}s")
            self._read_exact_into(memoryview(header))
            magic, width, height, stride, pts_ns, _ = HEADER.unpack(header)
            if magic == END_MAGIC:
                if self.live:
                    raise SourceError(f"camera {self.camera.id}: the GStreamer stream ended")
                raise EndOfSource
            if magic != MAGIC:
                raise self._helper_error("sent a malformed frame header")
            first = False
            pts = pts_ns / 1e9 if pts_ns >= 0 else None
            if stride == width * 3 and self.camera.roi is None:
                pending = _PipePicture(self, height, width)
                self._pending = pending
                yield _GstDecodedPipe(pts, pending, self)
            else:
                raw = np.empty((height, stride), dtype=np.uint8)
                self._read_exact_into(memoryview(raw.data).cast("B"))
                bgr = raw[:, : width * 3].reshape(height, width, 3)
                # Row padding or an ROI: through a private buffer, then one copy into the slot.
                yield _GstDecoded(pts, BgrPicture(_crop(bgr, self.camera.roi)))

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._out.close()
        self._stderr.close()


@dataclass
class _GstDecodedPipe:
    pts: float | None
    _picture: _PipePicture
    _source: GStreamerSource

    def picture(self) -> Picture:
        # Taken: the runner writes it into the ring, which reads the rows from the pipe.
        self._source._pending = None
        return self._picture
