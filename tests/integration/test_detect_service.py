"""`alpr detect` in the pipeline: a real `alpr ingest` process writes frames into shared memory, the
detect process reads them in place over ZeroMQ handles, and a test PULL socket (standing in for track)
receives one FrameDetections per detected frame, with plates found on the moving photo."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import yaml
import zmq.asyncio

from alpr_detect.models import ModelStore, default_models_dir, ensure_provisioned
from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.framestore import SHM_DIR
from alpr_shared.schemas import FrameDetections
from alpr_shared.tools.synthvideo import make_pan_video
from alpr_shared.transport import open_socket
from tests.harness.services import start_service, stop_service

DATA = openalpr_benchmarks()


async def test_detect_between_real_ingest_and_a_subscriber(tmp_path: Path) -> None:
    store = ModelStore(default_models_dir())
    ensure_provisioned(store, "plate-yolov8n")
    photo = DATA / "eu" / sorted(p.name for p in (DATA / "eu").glob("*.jpg"))[0]
    video = make_pan_video(tmp_path / "cam.mp4", image=photo, seconds=4.0, fps=5.0, width=960, height=540)
    namespace = f"dt{os.getpid()}"
    config = tmp_path / "alpr.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_dir": str(tmp_path / "run"),
                "frame_store": {
                    "namespace": namespace,
                    "slots_per_camera": 16,
                    "max_width": 960,
                    "max_height": 540,
                },
                "cameras": [{"id": "cam-a", "source": str(video)}, {"id": "cam-b", "source": str(video)}],
                "detect": {
                    "models_dir": str(store.root),
                    "providers": ["CPUExecutionProvider"],
                    "input_size": 640,
                    "batch_size": 2,
                    "batch_deadline_ms": 20,
                },
            }
        )
    )
    detect = start_service("detect", config, tmp_path / "detect.log")
    ingest: subprocess.Popen[bytes] | None = None
    ctx = zmq.asyncio.Context()
    pull = open_socket(
        ctx,
        name="detections",
        pattern="pull",
        spec=f"ipc://{tmp_path / 'run' / 'detections.sock'}",
        default_mode="connect",
        message_type=FrameDetections,
        hwm=10_000,
    )
    received: list[FrameDetections] = []
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / "detections.sock").exists():
            assert detect.poll() is None, (tmp_path / "detect.log").read_text()
            assert time.monotonic() < deadline, "detect did not bind its detections socket"
            await asyncio.sleep(0.1)
        ingest = start_service("ingest", config, tmp_path / "ingest.log")
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 4.0 and time.monotonic() < deadline:
            try:
                received.append(await pull.recv(timeout=0.5))
                quiet_since = time.monotonic()
            except TimeoutError:
                continue
    finally:
        pull.close()
        ctx.destroy(linger=0)
        ingest_rc = stop_service(ingest) if ingest is not None else None
        detect_rc = stop_service(detect)
    log = (tmp_path / "detect.log").read_text()
    assert detect_rc == 0, log
    assert ingest_rc == 0, (tmp_path / "ingest.log").read_text()
    cameras = {m.camera_id for m in received}
    assert cameras == {"cam-a", "cam-b"}, log
    # 2 cameras x 20 frames at 5 fps. On a busy 2-core machine detect may fall behind and shed the oldest
    # frames (by design, counted in frames_dropped_total); at least half must come through.
    assert len(received) >= 20, (len(received), log)
    with_plate = [m for m in received if any(d.label == "plate" for d in m.detections)]
    assert len(with_plate) >= 0.8 * len(received), "plates should be found on most frames of the photo"
    for m in received:
        assert m.frame.segment == f"alpr.{namespace}.{m.camera_id}"
        assert m.backend == "onnxruntime-cpu" and m.inference_ms > 0
    # Frames of one camera arrive in order.
    for cam in cameras:
        seqs = [m.frame.seq for m in received if m.camera_id == cam]
        assert seqs == sorted(seqs)
    assert not list(SHM_DIR.glob(f"alpr.{namespace}.*")), "ingest left its rings behind"
