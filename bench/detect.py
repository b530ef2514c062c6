"""Detect service path vs raw model inference on the same frames, in the same run.

Frames: the OpenALPR photos resized to 1280x720, written once into shared-memory rings (2 cameras).
- raw: only the model calls the pipeline makes for those frames (first pass on the batch tensor, plus
  the second-pass crop tensors), timed on tensors prepared beforehand: the ceiling.
- service: the real `alpr detect` process: FrameReady handles over ZeroMQ, pixels read in place from
  shared memory, batching, letterbox, inference, NMS, refinement, FrameDetections published over PUSH
  to this process. Frames are offered with a window of 2 batches in flight so none are shed.
Target: service frames/s >= 90 % of raw. Also reports ms/frame per batch size and peak RSS of detect.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench/detect.py` runs as a script

import cv2
import numpy as np
import psutil
import yaml
import zmq.asyncio

from alpr_detect.build import build_pipeline
from alpr_detect.detector import read_bgr
from alpr_detect.models import ModelStore, default_models_dir, ensure_provisioned
from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.framestore import FrameWriter
from alpr_shared.schemas import FrameDetections, FrameReady
from alpr_shared.settings import DetectSettings
from alpr_shared.transport import open_socket
from bench._common import bench_parser, finish, fmt, machine_line, table

DATA = openalpr_benchmarks()
TARGET = 0.90
CAMERAS = ("bench-a", "bench-b")


def load_frames(n: int) -> list[np.ndarray]:
    paths = sorted((DATA / "us").glob("*.jpg")) + sorted((DATA / "eu").glob("*.jpg"))
    frames = []
    for path in paths[:n]:
        frames.append(np.ascontiguousarray(cv2.resize(read_bgr(str(path)), (1280, 720))))
    return frames


def raw_fps(settings: DetectSettings, store: ModelStore, frames: list[np.ndarray], repeats: int) -> float:
    """Frames/s of the model calls alone (tensors prepared outside the timing)."""
    with ExitStack() as stack:
        pipeline = build_pipeline(settings, store, stack)
        b = settings.batch_size
        calls: list[tuple[object, np.ndarray]] = []
        for start in range(0, len(frames), b):
            chunk = frames[start : start + b]
            prepared, _ = pipeline.prepare(chunk)
            calls.append((pipeline.plates.backend, prepared.tensor.copy()))
            found = pipeline.infer_and_decode(prepared, None)
            if pipeline.second_pass is not None:
                crops = []
                from alpr_detect.refine import crop_window  # noqa: PLC0415

                for image, dets in zip(chunk, found, strict=True):
                    for j in range(len(dets)):
                        x0, y0, x1, y1 = crop_window(
                            dets.boxes[j], image.shape[:2], pipeline.second_pass.context
                        )
                        crops.append(image[y0:y1, x0:x1])
                cd = pipeline.second_pass.crop_detector
                for s in range(0, len(crops), cd.backend.max_batch):
                    calls.append((cd.backend, cd.prepare(crops[s : s + cd.backend.max_batch]).tensor.copy()))
        for backend, tensor in calls:
            backend.infer(tensor)  # type: ignore[attr-defined]  # warm-up: every shape once
        started = time.perf_counter()
        for _ in range(repeats):
            for backend, tensor in calls:
                backend.infer(tensor)  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
    return repeats * len(frames) / elapsed


async def service_fps(
    config: Path, *, runtime: Path, frames: list[np.ndarray], repeats: int, batch: int, namespace: str
) -> tuple[float, float, int]:
    """(frames/s, peak RSS MB of detect, frames received) through the real detect process."""
    with (runtime / "detect.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
            [sys.executable, "-m", "alpr_shared.cli", "detect", "-c", str(config), "--metrics-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    writers = {
        c: FrameWriter(f"alpr.{namespace}.{c}", slot_count=64, max_height=720, max_width=1280)
        for c in CAMERAS
    }
    ctx = zmq.asyncio.Context()
    pub = open_socket(
        ctx,
        name="frames",
        pattern="pub",
        spec=f"ipc://{runtime}/frames.sock",
        default_mode="bind",
        message_type=FrameReady,
        hwm=1000,
    )
    pull = open_socket(
        ctx,
        name="detections",
        pattern="pull",
        spec=f"ipc://{runtime}/detections.sock",
        default_mode="connect",
        message_type=FrameDetections,
        hwm=10_000,
    )
    peak_rss = 0.0
    received = 0
    try:
        deadline = time.monotonic() + 60
        while not (runtime / "detections.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("detect did not start: " + (runtime / "detect.log").read_text()[-2000:])
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # SUB joins the PUB
        ps = psutil.Process(proc.pid)
        # The first pass over the frames is warm-up: ONNX Runtime plans memory for each new input shape
        # (batch sizes, crop counts) on first sight. Only the repeats after it are timed.
        total = (repeats + 1) * len(frames)
        window = 2 * batch
        sent = 0
        started = 0.0
        warm = len(frames)
        while received < total:
            while sent < total and sent - received < window:
                cam = CAMERAS[sent % len(CAMERAS)]
                ref = writers[cam].write(frames[sent % len(frames)])
                await pub.send(
                    FrameReady(
                        camera_id=cam,
                        frame=ref,
                        captured_at_ns=time.time_ns(),
                        published_at_ns=time.monotonic_ns(),
                    )
                )
                sent += 1
            await pull.recv(timeout=60)
            received += 1
            if received == warm:
                started = time.perf_counter()
            if received % 8 == 0:
                peak_rss = max(peak_rss, ps.memory_info().rss / 2**20)
        elapsed = time.perf_counter() - started
        fps = (received - warm) / elapsed
    finally:
        pub.close()
        pull.close()
        ctx.destroy(linger=0)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        for w in writers.values():
            w.close()
    return fps, peak_rss, received


def motion_gate_report(store: ModelStore, workdir: Path) -> str:
    """Work saved and plate observations lost by the motion gate on the demo video (a pan/zoom over a
    labelled photo, as `alpr demo` makes it) followed by the same scene held still (a parked car)."""
    from alpr_detect.motion import MotionConfig, MotionGate  # noqa: PLC0415
    from alpr_shared.tools.synthvideo import make_pan_video  # noqa: PLC0415

    photo = sorted((DATA / "eu").glob("*.jpg"))[0]
    video = make_pan_video(workdir / "demo.mp4", image=photo, seconds=4.0, fps=10.0, width=1280, height=720)
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame))
    cap.release()
    moving = len(frames)
    frames += [frames[-1].copy() for _ in range(moving)]  # then 4 s of the same scene, still
    settings = DetectSettings(models_dir=store.root, providers=["CPUExecutionProvider"], batch_size=4)
    with ExitStack() as stack:
        pipeline = build_pipeline(settings, store, stack)
        found = [len(d) > 0 for d in pipeline.detect(frames)]
    gate = MotionGate(MotionConfig())
    fps = 10.0
    run = [gate.should_detect(f, i / fps)[0] for i, f in enumerate(frames)]
    detected = sum(run)
    plate_frames = sum(found)
    kept = sum(1 for r, f in zip(run, found, strict=True) if r and f)
    # Longest stretch without a detected plate (gated), in seconds: what track sees of a parked car.
    gap = longest = 0
    for r, f in zip(run, found, strict=True):
        gap = 0 if (r and f) else gap + 1
        longest = max(longest, gap)
    return (
        f"motion gate on the demo video ({moving} moving + {moving} still frames at 10 fps): detection ran on "
        f"{detected}/{len(frames)} frames ({1 - detected / len(frames):.0%} of the work saved); plate observations "
        f"kept {kept}/{plate_frames} ({kept / max(1, plate_frames):.0%}); longest gap without a plate "
        f"{longest / fps:.1f} s (forced frame every {MotionConfig().forced_interval_s:.0f} s)"
    )


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, nargs="*", help="batch sizes (default 1 4, quick: 4)")
    args = parser.parse_args()
    print(machine_line())
    store = ModelStore(default_models_dir())
    ensure_provisioned(store, "plate-yolov8n")
    n_frames, repeats, rounds = (12, 2, 1) if args.quick else (24, 3, 2)
    batches = args.batch or ([4] if args.quick else [1, 4])
    frames = load_frames(n_frames)
    rows = []
    verdict_ratio = None
    peak = 0.0
    for batch in batches:
        # Two batches in flight (see service_fps) must fit the per-camera pool, or the pool sheds them.
        settings = DetectSettings(
            models_dir=store.root,
            providers=["CPUExecutionProvider"],
            batch_size=batch,
            max_pending_per_camera=max(2, batch),
        )
        # The machine is shared (other jobs come and go): alternate raw and service runs and keep the best
        # of each, so a burst of outside load does not decide the ratio.
        raws: list[float] = []
        svcs: list[float] = []
        rss = 0.0
        received = 0
        for _ in range(rounds):
            raws.append(raw_fps(settings, store, frames, repeats))
            with tempfile.TemporaryDirectory(prefix="alpr-bench-detect-") as tmp:
                runtime = Path(tmp)
                namespace = f"bd{os.getpid()}"
                config = runtime / "alpr.yaml"
                detect_cfg = {**settings.model_dump(mode="json"), "batch_deadline_ms": 50}
                config.write_text(
                    yaml.safe_dump(
                        {
                            "runtime_dir": str(runtime),
                            "frame_store": {"namespace": namespace},
                            "detect": detect_cfg,
                        }
                    )
                )
                fps, peak_run, received = asyncio.run(
                    service_fps(
                        config,
                        runtime=runtime,
                        frames=frames,
                        repeats=repeats,
                        batch=batch,
                        namespace=namespace,
                    )
                )
            svcs.append(fps)
            rss = max(rss, peak_run)
        raw = max(raws)
        svc = max(svcs)
        print(
            f"b{batch}: raw fps runs {[round(r, 2) for r in raws]}, service fps runs {[round(v, 2) for v in svcs]}"
            f" ({received} frames in the last service run)"
        )
        ratio = svc / raw
        peak = max(peak, rss)
        rows.append(
            [
                f"onnxruntime-cpu b{batch}",
                fmt(raw, 2),
                fmt(1000 / raw, 1),
                fmt(svc, 2),
                fmt(1000 / svc, 1),
                fmt(ratio, 3),
                fmt(rss, 0),
            ]
        )
        if batch == max(batches):
            verdict_ratio = ratio
    print(
        f"frames: {n_frames} photos at 1280x720 x {repeats} repeats, 2 cameras; defaults: input 960, second-pass refine"
    )
    print(
        table(
            [
                "backend/batch",
                "raw fps",
                "raw ms/frame",
                "service fps",
                "service ms/frame",
                "ratio",
                "peak RSS MB",
            ],
            rows,
        )
    )
    print("tensorrt: not measured (no GPU on this machine)")
    if not args.quick:
        with tempfile.TemporaryDirectory(prefix="alpr-bench-motion-") as tmp:
            print(motion_gate_report(store, Path(tmp)))
    assert verdict_ratio is not None
    return finish(
        "detect",
        {
            "ratio": fmt(verdict_ratio, 3),
            "service_fps": rows[-1][3],
            "raw_fps": rows[-1][1],
            "peak_rss_mb": fmt(peak, 0),
        },
        f">={TARGET}",
        verdict_ratio >= TARGET,
    )


if __name__ == "__main__":
    sys.exit(main())
