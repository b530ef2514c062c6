"""The edge pipeline end to end, every stage its own process: ingest → detect → track → ocr coordinator
⇄ ocr worker, with a test PULL socket standing in for events on `plate_reads`. A moving photo of a
labelled plate must come out as a final PlateRead of that camera."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
import zmq.asyncio
from rapidfuzz.distance import Levenshtein

from alpr_detect.models import ModelStore, default_models_dir, ensure_provisioned
from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.framestore import SHM_DIR
from alpr_shared.schemas import PlateRead
from alpr_shared.tools.synthvideo import make_pan_video
from alpr_shared.transport import open_socket
from tests.harness.services import start_service, stop_service

pytestmark = pytest.mark.e2e


async def test_a_moving_plate_is_read_through_every_edge_stage(tmp_path: Path) -> None:
    store = ModelStore(default_models_dir())
    ensure_provisioned(store, "plate-yolov8n")
    folder = openalpr_benchmarks() / "eu"
    label = (folder / "eu1.txt").read_text().split("\t")[5].strip()
    video = make_pan_video(
        tmp_path / "cam.mp4", image=folder / "eu1.jpg", seconds=4.0, fps=5.0, width=960, height=540
    )
    namespace = f"e2e{os.getpid()}"
    run = tmp_path / "run"
    config = tmp_path / "alpr.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_dir": str(run),
                "frame_store": {
                    "namespace": namespace,
                    "slots_per_camera": 16,
                    "max_width": 960,
                    "max_height": 540,
                },
                "cameras": [{"id": "gate", "source": str(video)}],
                "detect": {
                    "models_dir": str(store.root),
                    "providers": ["CPUExecutionProvider"],
                    "input_size": 640,
                },
            }
        )
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("ocr", "ocr-worker", "track", "detect", "ingest")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ctx = zmq.asyncio.Context()
    pull = open_socket(
        ctx,
        name="plate_reads",
        pattern="pull",
        spec=f"ipc://{run / 'plate-reads.sock'}",
        default_mode="connect",
        message_type=PlateRead,
        hwm=10_000,
    )
    reads: list[PlateRead] = []

    async def collect(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                reads.append(await pull.recv(timeout=0.5))
            except TimeoutError:
                continue

    def all_logs() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in logs.items() if p.exists())

    try:
        # Downstream first: each stage binds its output, the next one connects (docs/architecture.md §2).
        for name in ("ocr", "ocr-worker", "track", "detect"):
            procs[name] = start_service(name, config, logs[name])
        deadline = time.monotonic() + 90
        while not (run / "detections.sock").exists():
            assert all(p.poll() is None for p in procs.values()), all_logs()
            assert time.monotonic() < deadline, "detect did not bind its socket\n" + all_logs()
            await asyncio.sleep(0.2)
        procs["ingest"] = start_service("ingest", config, logs["ingest"])
        await collect(15.0)  # 4 s of video at 5 fps, detection at ~10 fps on 2 cores
        # End of the passage: stop the source, then track, which ends its open tracks so OCR finalises.
        for name in ("ingest", "detect", "track"):
            assert stop_service(procs[name], timeout=30) == 0, all_logs()
        await collect(10.0)
    finally:
        pull.close()
        ctx.destroy(linger=0)
        codes = {name: stop_service(proc, timeout=30) for name, proc in procs.items()}
    assert all(code == 0 for code in codes.values()), (codes, all_logs())
    assert reads, "no PlateRead came out of the pipeline\n" + all_logs()
    finals = [r for r in reads if r.final]
    assert finals, f"no final read: {[(r.track_id, r.text) for r in reads]}\n" + all_logs()
    assert all(r.camera_id == "gate" for r in reads)
    best = min(finals, key=lambda r: Levenshtein.distance(r.text, label))
    assert Levenshtein.distance(best.text, label) <= 1, (label, [(r.text, r.confidence) for r in finals])
    assert best.plate_jpeg, "the final read carries its best-shot crop"
    assert not list(SHM_DIR.glob(f"alpr.{namespace}.*")), "ingest left its rings behind"
