"""The view process: ZeroMQ listeners, the renderer and the HTTP page (Litestar under uvicorn).

Owns: a frames SUB (connects, like detect), the monitor SUB (binds `endpoints.monitor`), a read-only
`FrameReader`, the optional `VideoRecorder`, and the HTTP server. It must never sit on a reliable
socket of the pipeline or hold a frame slot longer than one copy.

Frames are copied out of shared memory and drawn only while someone looks: an open MJPEG stream, a
snapshot asked for in the last `_SNAPSHOT_INTEREST_S` seconds, or `--save-video`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvicorn
import zmq
import zmq.asyncio
from litestar import Litestar, MediaType, Response, get
from litestar.response import Stream

from alpr_shared.framestore import FrameReader, FrameStoreError
from alpr_shared.logging import get_logger
from alpr_shared.schemas import FrameDetections, FrameReady, PlateRead, TrackMessage
from alpr_shared.settings import AlprSettings
from alpr_shared.transport import FrameSubscription, MessageSocket, open_socket
from alpr_shared.view.draw import annotate, encode_jpeg
from alpr_shared.view.recorder import VideoRecorder
from alpr_shared.view.state import Render, ViewState

log = get_logger(__name__)

BOUNDARY = "alprframe"
# A snapshot request keeps frames being drawn this long (a page polling snapshots, a test).
_SNAPSHOT_INTEREST_S = 10.0
# Messages taken from the monitor socket per wake-up before the renderer gets a turn.
_MONITOR_BATCH = 512

MonitorMessage = FrameDetections | TrackMessage | PlateRead


class ViewError(RuntimeError):
    """A startup problem the user must fix (printed as one line, exit code 1)."""


@dataclass
class _Published:
    jpeg: bytes
    version: int
    captured_at_ns: int


class ViewServer:
    def __init__(
        self,
        settings: AlprSettings,
        *,
        camera: str | None = None,
        save_video: Path | None = None,
    ) -> None:
        self.settings = settings
        self.view = settings.view
        known = [c.id for c in settings.cameras]
        if camera is not None and known and camera not in known:
            raise ViewError(f"camera {camera!r} is not in the configuration (cameras: {', '.join(known)})")
        self.camera = camera
        self.state = ViewState(self.view, cameras=[c for c in known if camera in (None, c)], only=camera)
        self.save_video = save_video
        # The camera --save-video records: the one asked for, else the first configured (or first seen).
        self.record_camera = camera or (known[0] if known else None)
        self.recorder: VideoRecorder | None = None
        self.published: dict[str, _Published] = {}
        self._new_frame: dict[str, asyncio.Event] = {}
        self.stop = asyncio.Event()
        self.clients = 0
        self._snapshot_until = 0.0
        self.frames_received = 0
        self.monitor_received = 0
        self.stale_frames = 0
        self.drawn = 0
        self.started = time.monotonic()

    # --- ZeroMQ -----------------------------------------------------------------------------------------

    def _open_sockets(
        self, context: zmq.asyncio.Context
    ) -> tuple[MessageSocket[FrameReady], MessageSocket[Any]]:
        endpoints = self.settings.endpoints
        if not endpoints.monitor:
            raise ViewError('endpoints.monitor is "" (off): detect, track and ocr publish nothing to view')
        frames = open_socket(
            context,
            name="frames",
            pattern="sub",
            spec=self.settings.endpoint("frames"),
            default_mode="connect",
            message_type=FrameReady,
            hwm=endpoints.frames_hwm,
        )
        monitor_spec = self.settings.endpoint("monitor")
        try:
            _check_ipc_free(monitor_spec)
            monitor: MessageSocket[Any] = open_socket(
                context,
                name="monitor",
                pattern="sub",
                spec=monitor_spec,
                default_mode="bind",
                # A union of message types: the codec decodes by the `type` tag.
                message_type=cast(type[Any], MonitorMessage),
                hwm=endpoints.messages_hwm,
            )
        except ViewError:
            frames.close()
            raise
        except (zmq.ZMQError, OSError) as exc:
            frames.close()
            raise ViewError(
                f"cannot bind the monitor endpoint {monitor_spec}: {exc} (is another view running?)"
            ) from exc
        return frames, monitor

    async def _frames_loop(self, subscription: FrameSubscription) -> None:
        while not self.stop.is_set():
            try:
                batch = await subscription.next_batch(timeout=0.5)
            except TimeoutError:
                continue
            now = time.monotonic()
            for msg in batch:
                self.frames_received += 1
                self.state.on_frame(msg, now)
            # Shed frames still count towards the camera's input rate: their sequence numbers are seen.

    async def _monitor_loop(self, monitor: MessageSocket[Any]) -> None:
        while not self.stop.is_set():
            try:
                first = await monitor.recv(timeout=0.5)
            except TimeoutError:
                continue
            now = time.monotonic()
            for msg in [first, *monitor.drain(_MONITOR_BATCH)]:
                self.monitor_received += 1
                if isinstance(msg, FrameDetections):
                    self.state.on_detections(msg, now)
                elif isinstance(msg, TrackMessage):
                    self.state.on_track(msg, now)
                elif isinstance(msg, PlateRead):
                    self.state.on_read(msg, now)

    # --- rendering --------------------------------------------------------------------------------------

    def interested(self, now: float) -> bool:
        return self.clients > 0 or self.recorder is not None or now < self._snapshot_until

    def _draw(self, render: Render, pixels: Any) -> bytes:
        image = annotate(pixels, render.overlay, max_width=self.view.max_width)
        if self.recorder is not None and render.camera_id == self.record_camera:
            self.recorder.write(image, render.captured_at_ns)
        return encode_jpeg(image, self.view.jpeg_quality)

    async def _render_loop(self, reader: FrameReader) -> None:
        tick = max(0.005, 0.5 / self.view.max_fps)
        while not self.stop.is_set():
            await asyncio.sleep(tick)
            now = time.monotonic()
            renders = self.state.due(now)
            if not renders or not self.interested(now):
                continue
            for render in renders:
                if self.recorder is None and self.save_video is not None:
                    if self.record_camera is None:
                        self.record_camera = render.camera_id
                    self.recorder = VideoRecorder(self.save_video, nominal_fps=self.view.max_fps)
                try:
                    pixels = reader.copy(render.frame)
                except FrameStoreError:  # overwritten meanwhile, or the ring is gone: skip this frame
                    self.stale_frames += 1
                    continue
                jpeg = await asyncio.to_thread(self._draw, render, pixels)
                self._publish(render.camera_id, jpeg, render.captured_at_ns)
                self.state.camera(render.camera_id).fps_view.add(time.monotonic())
                self.drawn += 1

    def _publish(self, camera_id: str, jpeg: bytes, captured_at_ns: int) -> None:
        previous = self.published.get(camera_id)
        self.published[camera_id] = _Published(
            jpeg, (previous.version + 1) if previous else 1, captured_at_ns
        )
        event = self._new_frame.pop(camera_id, None)
        if event is not None:
            event.set()

    async def next_frame(self, camera_id: str, after_version: int, timeout: float) -> _Published | None:
        """The published frame newer than `after_version`, waiting up to `timeout`; None if none came."""
        current = self.published.get(camera_id)
        if current is not None and current.version > after_version:
            return current
        event = self._new_frame.setdefault(camera_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        current = self.published.get(camera_id)
        return current if current is not None and current.version > after_version else None

    async def mjpeg(self, camera_id: str) -> AsyncIterator[bytes]:
        self.clients += 1
        try:
            version = 0
            while not self.stop.is_set():
                frame = await self.next_frame(camera_id, version, timeout=1.0)
                if frame is None:
                    continue
                version = frame.version
                yield (
                    (
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.jpeg)}\r\n\r\n"
                    ).encode()
                    + frame.jpeg
                    + b"\r\n"
                )
        finally:
            self.clients -= 1

    def want_snapshot(self) -> None:
        self._snapshot_until = time.monotonic() + _SNAPSHOT_INTEREST_S

    # --- HTTP -------------------------------------------------------------------------------------------

    def cameras(self) -> list[str]:
        return sorted(self.state.cameras)

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "cameras": self.cameras(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "frames_received": self.frames_received,
            "monitor_messages": self.monitor_received,
            "frames_drawn": self.drawn,
            "stale_frames": self.stale_frames,
            "clients": self.clients,
            "recording": str(self.save_video) if self.save_video else None,
        }

    def page(self) -> str:
        tiles = (
            "\n".join(
                f'<figure><figcaption>{html.escape(c)} <span class="st" id="st-{html.escape(c)}"></span>'
                f'</figcaption><img alt="{html.escape(c)}" src="/stream/{html.escape(c)}"></figure>'
                for c in self.cameras()
            )
            or "<p>No cameras configured or seen yet.</p>"
        )
        return _PAGE.replace("{tiles}", tiles)

    def app(self) -> Litestar:
        server = self

        @get("/", media_type=MediaType.HTML)
        async def index() -> str:
            return server.page()

        @get("/health")
        async def health() -> dict[str, object]:
            return server.health()

        @get("/status")
        async def status() -> dict[str, object]:
            return {"cameras": server.state.status(time.monotonic())}

        @get("/stream/{camera:str}")
        async def stream(camera: str) -> Stream:
            if camera not in server.state.cameras:
                return _not_found(camera)  # type: ignore[return-value]
            return Stream(
                server.mjpeg(camera),
                media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                headers={"Cache-Control": "no-store"},
            )

        @get("/snapshot/{camera:str}")
        async def snapshot(camera: str) -> Response[bytes]:
            if camera not in server.state.cameras:
                return _not_found(camera)
            server.want_snapshot()
            frame = await server.next_frame(camera, 0, timeout=2.0)
            if frame is None:
                return Response(b"no frame yet\n", status_code=503, media_type=MediaType.TEXT)
            return Response(frame.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

        return Litestar([index, health, status, stream, snapshot], logging_config=None, openapi_config=None)

    # --- lifetime ---------------------------------------------------------------------------------------

    async def run(self, host: str, port: int, ready: asyncio.Event | None = None) -> None:
        context = zmq.asyncio.Context()
        frames: MessageSocket[FrameReady] | None = None
        monitor: MessageSocket[Any] | None = None
        listener: socket.socket | None = None
        try:
            frames, monitor = self._open_sockets(context)
            listener = _listen(host, port)
            config = uvicorn.Config(
                self.app(),
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
            http = _Server(config)
            with FrameReader() as reader:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._frames_loop(FrameSubscription(frames)), name="view-frames")
                    group.create_task(self._monitor_loop(monitor), name="view-monitor")
                    group.create_task(self._render_loop(reader), name="view-render")
                    group.create_task(http.serve(sockets=[listener]), name="view-http")
                    log.info(
                        "view_ready",
                        url=f"http://{host}:{listener.getsockname()[1]}/",
                        cameras=self.cameras(),
                        monitor=self.settings.endpoint("monitor"),
                        save_video=str(self.save_video) if self.save_video else None,
                    )
                    if ready is not None:
                        ready.set()
                    await self.stop.wait()
                    http.should_exit = True
        finally:
            if self.recorder is not None:
                self.recorder.close()
                log.info("view_video_saved", path=str(self.save_video), frames=self.recorder.frames)
            if frames is not None:
                frames.close()
            if monitor is not None:
                monitor.close()
            if listener is not None:
                listener.close()
            context.destroy(linger=0)


def _check_ipc_free(spec: str) -> None:
    """ZeroMQ's ipc bind silently takes over a path another process listens on (that process would
    stop receiving), so refuse when a live listener answers there; a leftover file is fine."""
    if "ipc://" not in spec:
        return
    path = Path(spec.split("ipc://", 1)[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        return  # nobody listens: a leftover of a view that was killed
    finally:
        probe.close()
    raise ViewError(f"another view already listens on {spec} (one view per endpoints.monitor)")


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP listening socket, bound here so that a taken port is a clear error, not uvicorn's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ViewError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(64)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the view's handlers own SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _not_found(camera: str) -> Response[bytes]:
    body = json.dumps({"error": f"unknown camera {camera!r}"}).encode()
    return Response(body, status_code=404, media_type=MediaType.JSON)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alpr view</title>
<style>
body { background: #111; color: #ddd; font: 14px system-ui, sans-serif; margin: 12px; }
main { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figcaption { margin: 4px 0; } img { max-width: 100%; display: block; background: #000; }
.st { color: #9a9; }
</style></head>
<body><h1 style="font-size:16px">alpr view — live annotated cameras</h1>
<main>
{tiles}
</main>
<script>
async function poll() {
  try {
    const r = await fetch('/status'); const s = await r.json();
    for (const [cam, st] of Object.entries(s.cameras)) {
      const el = document.getElementById('st-' + cam); if (!el) continue;
      const reads = st.reads.slice(0, 3).map(x => x.text + ' ' + Math.round(x.confidence * 100) + '%').join(', ');
      el.textContent = `in ${st.fps_in ?? '-'} fps, detect ${st.fps_detect ?? '-'} fps, view ${st.fps_view ?? '-'} fps, `
        + `${st.open_tracks} tracks, ${st.plates_read} final reads` + (reads ? ` — ${reads}` : '');
    }
  } catch (e) {}
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
"""
