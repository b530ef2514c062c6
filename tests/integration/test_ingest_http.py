"""`alpr ingest` on an HTTP MJPEG camera: a real multipart/x-mixed-replace server (what most IP cameras
serve at /mjpg/video.mjpg), which also hangs up mid-stream to make ingest reconnect."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from alpr_ingest.testing import IngestProcess, ensure_runtime_dir
from tests.harness import free_port

pytestmark = pytest.mark.integration

FRAMES_PER_CONNECTION = 40  # then the server hangs up, like a camera rebooting


class _MjpegHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        image = np.zeros((120, 160, 3), dtype=np.uint8)
        try:
            for i in range(FRAMES_PER_CONNECTION):
                image[:] = (i * 5) % 200 + 40
                ok, jpeg = cv2.imencode(".jpg", image)
                assert ok
                data = jpeg.tobytes()
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(data)).encode()
                    + b"\r\n\r\n"
                    + data
                    + b"\r\n"
                )
                self.wfile.flush()
                time.sleep(0.04)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def mjpeg_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _MjpegHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mjpg/video.mjpg"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_mjpeg_camera_streams_and_reconnects_after_a_hang_up(tmp_path: Path, mjpeg_url: str) -> None:
    config = {
        "runtime_dir": str(ensure_runtime_dir(tmp_path / "run")),
        "frame_store": {
            "namespace": f"mj{uuid.uuid4().hex[:8]}",
            "slots_per_camera": 4,
            "max_width": 320,
            "max_height": 240,
        },
        "cameras": [{"id": "mjpeg", "source": mjpeg_url, "backoff_min_s": 0.1, "backoff_max_s": 0.2}],
    }
    ingest = IngestProcess(tmp_path, config, metrics_port=free_port())
    ingest.start()
    try:
        ingest.wait_for(lambda: bool(ingest.events("camera_reconnected", camera="mjpeg")), 30, "a reconnect")
        ingest.wait_for(lambda: ingest.count("mjpeg") >= FRAMES_PER_CONNECTION + 10, 30, "frames after it")
    finally:
        assert ingest.stop() == 0
    frames = ingest.received("mjpeg")
    assert {f.shape for f in frames} == {(120, 160, 3)}
    assert ingest.events("camera_disconnected", camera="mjpeg")[0]["error_type"] == "SourceError"
