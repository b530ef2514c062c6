"""OCR benchmark: best-shot throttling against reading every frame, and worker scaling.

Part 1 (throttling, in one process, same recogniser for both policies): synthetic plate tracks built from
the real crops of `plate-crops-us` — a plate approaching the camera (it grows from 0.35x to 1.2x the crop),
motion blur fading as it slows, sensor noise, cut by the frame edge on its first frames. "Every frame"
reads each frame's crop and votes over all reads; "best shot" runs the coordinator's throttle and voting
(`alpr_ocr.tracks`, default settings). Reported: OCR calls per track and exact reads per track.

Part 2 (scaling): the coordinator's ROUTER and dispatcher in this process, 1 then 2 `alpr ocr-worker`
processes; crops/s over the same crops.

Target: >= 10x fewer calls with equal or better exact reads; 2 workers >= 1.7x the crops/s of 1.
"""

from __future__ import annotations

import asyncio
import csv
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench/ocr.py` runs as a script

from alpr_ocr.dispatch import Dispatcher, DispatchOptions
from alpr_ocr.recognizer import Recognizer
from alpr_ocr.shots import Shot, make_shot
from alpr_ocr.tracks import PlateTrack, Throttle
from alpr_ocr.voting import Ballot, vote
from alpr_ocr.worker import recognizer_options
from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.schemas import Box, OcrJob, OcrResult, OcrWorkerReady, TrackMessage
from alpr_shared.settings import AlprSettings, OcrSettings
from alpr_shared.transport import open_router
from bench._common import bench_parser, finish, machine_line

CROPS = openalpr_benchmarks() / "plate-crops-us"
FRAMES_PER_TRACK = 60
FRAME = (360, 640)


def _truth() -> list[tuple[str, str]]:
    with (CROPS / "groundtruth.csv").open() as fh:
        return [(r["image"], re.sub("[^A-Z0-9]", "", r["plate"].upper())) for r in csv.DictReader(fh)]


def _load(image: str) -> np.ndarray:
    crop = cv2.imread(str(CROPS / image))
    if crop is None:
        raise SystemExit(f"cannot read {CROPS / image}")
    return np.asarray(crop, dtype=np.uint8)


def track_frames(crop: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, Box]]:
    """One approaching plate: (frame, plate box) per frame."""
    out: list[tuple[np.ndarray, Box]] = []
    h0, w0 = crop.shape[:2]
    for i in range(FRAMES_PER_TRACK):
        t = i / (FRAMES_PER_TRACK - 1)
        scale = min(0.35 + 0.85 * t, 560 / w0, 300 / h0)
        plate = cv2.resize(
            crop, (max(4, round(w0 * scale)), max(2, round(h0 * scale))), interpolation=cv2.INTER_AREA
        )
        blur = round(9 * (1 - t)) | 1  # horizontal motion blur, fading as the vehicle slows
        if blur > 1:
            kernel = np.zeros((blur, blur), np.float32)
            kernel[blur // 2, :] = 1.0 / blur
            plate = cv2.filter2D(plate, -1, kernel)
        frame = np.full((*FRAME, 3), 80, np.uint8)
        h, w = plate.shape[:2]
        x = int((FRAME[1] - w) * (0.5 + 0.4 * (1 - t)))  # enters from the right edge
        y = int((FRAME[0] - h) * (0.2 + 0.6 * t))
        x_end = min(FRAME[1], x + w)
        frame[y : y + h, x:x_end] = plate[:, : x_end - x]
        noise = rng.normal(0, 4, frame.shape)
        frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
        out.append((frame, Box(x, y, x_end, y + h)))
    return out


def _message(box: Box) -> TrackMessage:
    return TrackMessage(
        camera_id="b",
        track_id=1,
        phase="updated",
        frame=None,
        captured_at_ns=0,
        plate_box=box,
        plate_score=0.8,
    )


def best_shot_policy(ocr: OcrSettings, shots: list[Shot], rec: Recognizer) -> tuple[int, str | None]:
    """What the coordinator does with one track's shots: (OCR calls, voted text)."""
    throttle = Throttle(ocr.throttle, ocr.shots)
    track = PlateTrack("b", 1, 0, _message(shots[0].box), 0.0)
    calls = 0

    def read(shot: Shot) -> None:
        nonlocal calls
        throttle.started(track, shot, "j")
        r = rec.read(shot.crop)
        calls += 1
        throttle.finished(track, Ballot(r.text, r.confidence, r.alternatives))

    for shot in shots:
        throttle.add_shot(track, shot)
        chosen = throttle.next_read(track)
        if chosen is not None:
            read(chosen)
    final = throttle.final_read(track)
    if final is not None:
        read(final)
    return calls, None if track.current is None else track.current.text


def run_throttling(
    settings: AlprSettings, plates: list[tuple[str, str]], rec: Recognizer
) -> dict[str, float]:
    rng = np.random.default_rng(7)
    ocr = settings.ocr
    every_calls = shot_calls = every_exact = shot_exact = 0
    ms: list[float] = []
    for image, truth in plates:
        frames = track_frames(_load(image), rng)
        # Policy A: read every frame, vote over everything.
        ballots: list[Ballot] = []
        shots = []
        for seq, (frame, box) in enumerate(frames):
            shot = make_shot(frame, box, detector_score=0.8, captured_at_ns=seq, settings=ocr.shots, seq=seq)
            shots.append(shot)
            if shot is None:
                continue
            start = time.perf_counter()
            r = rec.read(shot.crop)
            ms.append((time.perf_counter() - start) * 1000)
            every_calls += 1
            ballots.append(Ballot(r.text, r.confidence, r.alternatives))
        v = vote(ballots)
        every_exact += v is not None and v.text == truth
        # Policy B: the coordinator's throttle.
        calls, text = best_shot_policy(ocr, [shot for shot in shots if shot is not None], rec)
        shot_calls += calls
        shot_exact += text == truth
    n = len(plates)
    return {
        "every_calls": every_calls / n,
        "shot_calls": shot_calls / n,
        "every_exact": every_exact / n,
        "shot_exact": shot_exact / n,
        "ms_per_crop": float(np.median(ms)),
    }


async def _throughput(settings: AlprSettings, config: Path, crops: list[np.ndarray], workers: int) -> float:
    import zmq.asyncio  # noqa: PLC0415

    zctx = zmq.asyncio.Context()
    router = open_router(
        zctx, name="ocr_jobs", spec=settings.endpoint("ocr_jobs"), default_mode="bind",
        receive_type=OcrResult | OcrWorkerReady,  # type: ignore[arg-type]
        send_type=OcrJob, hwm=10_000,
    )  # fmt: skip
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before the measured part
            [sys.executable, "-m", "alpr_ocr", "worker", "-c", str(config), "--metrics-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    d = Dispatcher(DispatchOptions(job_timeout_s=10, worker_expiry_s=30))
    try:
        while len(d.workers) < workers:
            peer, msg = await router.recv(timeout=60)
            if isinstance(msg, OcrWorkerReady):
                d.on_ready(peer, msg, time.monotonic())
        for i, c in enumerate(crops):
            d.submit(
                OcrJob(
                    job_id=str(i),
                    camera_id="b",
                    track_id=i,
                    crop=c.tobytes(),
                    crop_height=c.shape[0],
                    crop_width=c.shape[1],
                )
            )
        start = time.monotonic()
        done = 0
        while done < len(crops):
            for peer, job in d.assign(time.monotonic()):
                await router.send(peer, job, timeout=10)
            peer, msg = await router.recv(timeout=60)
            if isinstance(msg, OcrWorkerReady):
                d.on_ready(peer, msg, time.monotonic())
            elif d.on_result(peer, msg, time.monotonic()) is not None:
                done += 1
        return len(crops) / (time.monotonic() - start)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
        router.close()
        zctx.destroy(linger=0)


def main() -> int:
    args = bench_parser(__doc__).parse_args()
    print(machine_line())
    plates = _truth()
    n_tracks = 40 if args.quick else len(plates)
    sample = plates[:: max(1, len(plates) // n_tracks)][:n_tracks]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "alpr.yaml"
        config.write_text(f"runtime_dir: {tmp}/run\nlog: {{level: warning}}\n")
        settings = AlprSettings(runtime_dir=Path(tmp) / "run")
        rec = Recognizer.open(recognizer_options(settings.ocr))
        t = run_throttling(settings, sample, rec)
        rec.close()
        ratio = t["every_calls"] / max(t["shot_calls"], 1e-9)
        print(f"tracks: {n_tracks} synthetic approaching plates x {FRAMES_PER_TRACK} frames (plate-crops-us)")
        print(f"  every frame: {t['every_calls']:.1f} OCR calls/track, exact {t['every_exact']:.1%}")
        print(
            f"  best shot:   {t['shot_calls']:.2f} OCR calls/track, exact {t['shot_exact']:.1%}  ({ratio:.1f}x fewer calls)"
        )
        print(f"  recognition: {t['ms_per_crop']:.1f} ms/crop median (1 intra-op thread, all strategies)")
        crops = [_load(image) for image, _ in plates]
        crops = (crops * 3)[: 150 if args.quick else 1000]
        one = asyncio.run(_throughput(settings, config, crops, 1))
        two = asyncio.run(_throughput(settings, config, crops, 2))
    scale = two / one
    print(f"workers: 1 -> {one:.1f} crops/s, 2 -> {two:.1f} crops/s ({scale:.2f}x) over {len(crops)} crops")
    passed = ratio >= 10 and t["shot_exact"] >= t["every_exact"] and scale >= 1.7
    return finish(
        "ocr",
        {
            "calls_ratio": f"{ratio:.1f}",
            "exact_best_shot": f"{t['shot_exact']:.3f}",
            "exact_every_frame": f"{t['every_exact']:.3f}",
            "scale_2_workers": f"{scale:.2f}",
            "ms_per_crop": f"{t['ms_per_crop']:.1f}",
        },
        "calls_ratio>=10,exact_best_shot>=exact_every_frame,scale_2_workers>=1.7",
        passed,
    )


if __name__ == "__main__":
    sys.exit(main())
