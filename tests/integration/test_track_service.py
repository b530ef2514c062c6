"""`alpr track` as a real process between a real PUSH of FrameDetections (standing in for detect) and a
real PULL of TrackMessages (standing in for the OCR coordinator), over the configured ipc endpoints."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from alpr_shared.schemas import FrameDetections, TrackMessage
from alpr_shared.settings import load_settings
from alpr_shared.transport import open_socket
from alpr_track.camera import CameraTracker
from alpr_track.synthetic import SimObject, simulate, to_message

pytestmark = pytest.mark.integration

SIZE = (1920, 1080)
CONFIG = """\
runtime_dir: {runtime}
log: {{format: json}}
services:
  track: {{shutdown_timeout_s: 10}}
cameras:
  - {{id: cam1, source: cam1.mp4}}
track:
  cameras:
    cam1:
      zones: [{{id: road, points: [[0, 0], [1920, 0], [1920, 1080], [0, 1080]]}}]
      counting_line: {{start: [0, 540], end: [1920, 540]}}
      direction: {{vector: [0, 1], forward: approaching, backward: leaving}}
"""


def _sequence() -> list[FrameDetections]:
    leaving = SimObject(
        1, (500, 150), (0, 16), (300, 200), label="truck", plate=True
    )  # drives out at the bottom
    parked = SimObject(2, (1400, 300), (0, 0), (300, 200), plate=True)  # still there at shutdown
    return [to_message(f) for f in simulate([leaving, parked], 90, SIZE)]


def _key(m: TrackMessage) -> tuple[object, ...]:
    """A message without its track ids (the service's come from the clock)."""
    return (
        m.phase,
        m.frame.seq if m.frame else None,
        m.plate_box,
        m.vehicle_class,
        m.direction,
        m.crossed_line,
        m.zone_id,
        m.end_reason,
    )


async def _exchange(
    config: Path, proc: subprocess.Popen[str], frames: list[FrameDetections]
) -> tuple[list[TrackMessage], int, str]:
    settings = load_settings(config)
    zctx = zmq.asyncio.Context()
    detect = open_socket(
        zctx,
        name="detections",
        pattern="push",
        spec=settings.endpoint("detections"),
        default_mode="bind",
        message_type=FrameDetections,
        hwm=1000,
    )
    received: list[TrackMessage] = []
    try:
        ocr = open_socket(
            zctx,
            name="tracks",
            pattern="pull",
            spec=settings.endpoint("tracks"),
            default_mode="connect",
            message_type=TrackMessage,
            hwm=1000,
        )
        try:
            # A malformed message first: counted and dropped by the service, never a crash.
            await asyncio.wait_for(detect.socket.send(b"\x93not a message"), 20)
            for msg in frames:
                await detect.send(msg, timeout=20)
            # The truck's track ends on its own (left the frame) before we stop the service.
            while not any(m.phase == "ended" for m in received):
                received.append(await ocr.recv(timeout=20))
            proc.send_signal(signal.SIGTERM)
            # The parked car's track is ended by the shutdown; then nothing more may come.
            while sum(m.phase == "ended" for m in received) < 2:
                received.append(await ocr.recv(timeout=20))
            with pytest.raises(TimeoutError):
                received.append(await ocr.recv(timeout=0.5))
        finally:
            ocr.close()
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        return received, proc.returncode, err
    finally:
        detect.close()
        zctx.destroy(linger=0)


def test_service_between_detect_and_ocr(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    config = tmp_path / "alpr.yaml"
    config.write_text(CONFIG.format(runtime=runtime))
    frames = _sequence()
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpr_track", "-c", str(config), "--metrics-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        received, code, err = asyncio.run(_exchange(config, proc, frames))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, err[-3000:]

    # What the pure tracker says for the same input: the service must deliver exactly that, in order.
    settings = load_settings(config)
    ids = itertools.count(1)
    expected_tracker = CameraTracker(
        "cam1", settings.track, settings.track.cameras["cam1"], lambda: next(ids)
    )
    expected = [m for f in frames for m in expected_tracker.update(f)] + expected_tracker.end_all()
    assert [_key(m) for m in received] == [_key(m) for m in expected]

    by_track: dict[int, list[TrackMessage]] = {}
    for m in received:
        by_track.setdefault(m.track_id, []).append(m)
    assert len(by_track) == 2
    ends = {msgs[-1].end_reason: msgs[-1] for msgs in by_track.values()}
    assert set(ends) == {"left_frame", "shutdown"}
    truck = ends["left_frame"]
    assert truck.vehicle_class == "truck"
    assert truck.direction == "approaching"
    assert truck.crossed_line
    assert truck.zone_id == "road"
    assert not ends["shutdown"].crossed_line

    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "message_dropped" in names  # the malformed one, logged with its reason
    assert names.index("tracking_stopped") < names.index("service_stopped")
