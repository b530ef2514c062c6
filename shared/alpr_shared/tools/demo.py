"""`alpr demo`: what the platform can do so far, end to end across processes.

Generates a short video from a labelled photo, starts `alpr ingest` as its own process on N cameras,
attaches to the frame stream as detect will (`alpr tap`), reads every frame from shared memory, then
stops ingest with SIGTERM and checks that no shared memory was left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.framestore import SHM_DIR
from alpr_shared.settings import load_settings
from alpr_shared.tools.synthvideo import make_pan_video
from alpr_shared.tools.tap import tap


def _find_photo() -> Path | None:
    try:
        photos = sorted((openalpr_benchmarks() / "us").glob("*.jpg"))
    except FileNotFoundError:
        return None  # the demo falls back to a synthetic pattern
    return photos[0] if photos else None


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="alpr demo", description=__doc__)
    parser.add_argument("--cameras", type=int, default=2, help="cameras to simulate (default 2)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the generated video")
    parser.add_argument(
        "--workdir", type=Path, default=Path(".alpr-demo"), help="where the video and config go"
    )
    parser.add_argument("--image", type=Path, help="photo to pan over (default: the first shared US photo)")
    args = parser.parse_args(argv)

    workdir: Path = args.workdir.resolve()
    image = args.image or _find_photo()
    video = workdir / "pan.mp4"
    print(f"demo: generating {args.seconds:.0f}s of 1280x720 video from {image or 'a synthetic pattern'} …")
    make_pan_video(video, image=image, seconds=args.seconds)
    namespace = f"demo{os.getpid()}"
    config = {
        "runtime_dir": str(workdir / "run"),
        "log": {"format": "console"},
        "frame_store": {"namespace": namespace, "max_width": 1280, "max_height": 720},
        "cameras": [
            {"id": f"cam{i + 1}", "source": str(video), "realtime": True} for i in range(args.cameras)
        ],
    }
    config_path = workdir / "alpr.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    settings = load_settings(config_path)

    print(f"demo: starting `alpr ingest` with {args.cameras} camera(s) (config {config_path})")
    ingest = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alpr_shared.cli",
            "ingest",
            "--config",
            str(config_path),
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    try:
        time.sleep(0.5)  # let ingest bind before we subscribe: PUB/SUB delivers only to connected peers
        report = asyncio.run(tap(settings, idle_timeout=3.0))
    finally:
        ingest.send_signal(signal.SIGTERM)
        try:
            code = ingest.wait(timeout=15)
        except subprocess.TimeoutExpired:
            ingest.kill()
            code = ingest.wait()
    leftovers = [p.name for p in SHM_DIR.glob(f"alpr.{namespace}.*")] if SHM_DIR.is_dir() else []
    print(f"demo: ingest exited with {code}; shared-memory rings left behind: {len(leftovers)}")
    print(f"demo: {report.summary()}")
    ok = report.frames > 0 and report.stale == 0 and not leftovers and code == 0
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
