"""`alpr ocr` and `alpr ocr-worker` as real processes, between a real PUSH of TrackMessages (standing in
for track), a real frame ring (standing in for ingest) and a real PULL of PlateReads (standing in for
events): reads arrive once per track, a worker stuck and then killed mid-job has its job re-sent, and two
workers share the load."""

from __future__ import annotations

import asyncio
import csv
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
import zmq.asyncio

from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.framestore import FrameWriter
from alpr_shared.schemas import Box, PlateRead, TrackMessage
from alpr_shared.settings import load_settings
from alpr_shared.transport import open_socket
from tests.harness.ports import free_port

pytestmark = pytest.mark.integration

CROPS = openalpr_benchmarks() / "plate-crops-us"
CONFIG = """\
runtime_dir: {runtime}
log: {{format: json}}
frame_store: {{namespace: ocrtest, slots_per_camera: 64, max_width: 640, max_height: 360}}
ocr:
  job_timeout_s: 1.0
  worker_expiry_s: 3
  throttle: {{frames_before_first_read: 2}}
"""
# Plates whose crop PP-OCRv4 reads right here (checked by test_ocr_accuracy on the same files).
PLATES = ["ak1165.png", "ak399.png", "ak721.png", "ak848.png"]


def _truth() -> dict[str, str]:
    with (CROPS / "groundtruth.csv").open() as fh:
        return {row["image"]: row["plate"] for row in csv.DictReader(fh)}


def _spawn(command: str, config: Path, port: int) -> subprocess.Popen[str]:
    module = "alpr_ocr"
    args = [sys.executable, "-m", module, *(["worker"] if command == "ocr-worker" else [])]
    return subprocess.Popen(
        [*args, "-c", str(config), "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _metric(port: int, line_prefix: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_prefix))


def _wait_metric(port: int, prefix: str, at_least: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _metric(port, prefix) >= at_least:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{prefix} never reached {at_least}")


class Scene:
    """A camera ring with plates pasted on a grey road, and the track messages that go with it."""

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer
        self.truth = _truth()

    def frames(self, track_id: int, image: str, n: int) -> list[TrackMessage]:
        crop = np.asarray(cv2.imread(str(CROPS / image)), dtype=np.uint8)
        messages: list[TrackMessage] = []
        for i in range(n):
            frame = np.full((360, 640, 3), 90, np.uint8)
            scale = 0.6 + 0.6 * i / max(1, n - 1)  # approaching: the plate grows
            plate = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            h, w = plate.shape[:2]
            x, y = 100 + 3 * i, 100 + 2 * i
            frame[y : y + h, x : x + w] = plate
            ref = self.writer.write(frame)
            messages.append(
                TrackMessage(
                    camera_id="cam1",
                    track_id=track_id,
                    phase="started" if i == 0 else "updated",
                    frame=ref,
                    captured_at_ns=time.time_ns(),
                    plate_box=Box(x, y, x + w, y + h),
                    plate_score=0.8,
                    first_seen_ns=1,
                )
            )
        messages.append(
            TrackMessage(
                camera_id="cam1",
                track_id=track_id,
                phase="ended",
                frame=None,
                captured_at_ns=time.time_ns(),
                plate_box=messages[-1].plate_box,
                plate_score=0.8,
                end_reason="left_frame",
            )
        )
        return messages


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.communicate()


async def _collect(pull: object, want_final: int, timeout: float) -> list[PlateRead]:
    reads: list[PlateRead] = []
    deadline = time.monotonic() + timeout
    while sum(r.final for r in reads) < want_final:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            reads.append(await pull.recv(timeout=remaining))  # type: ignore[attr-defined]
        except TimeoutError:
            break
    return reads


def test_reads_once_resend_after_worker_killed_and_two_workers_share(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    config = tmp_path / "alpr.yaml"
    config.write_text(CONFIG.format(runtime=runtime))
    settings = load_settings(config)
    ports = {name: free_port() for name in ("ocr", "w1", "w2", "w3")}
    truth = _truth()

    async def scenario(procs: list[subprocess.Popen[str]]) -> None:
        zctx = zmq.asyncio.Context()
        push = open_socket(
            zctx, name="tracks", pattern="push", spec=settings.endpoint("tracks"), default_mode="bind",
            message_type=TrackMessage, hwm=10_000,
        )  # fmt: skip
        pull = open_socket(
            zctx, name="plate_reads", pattern="pull", spec=settings.endpoint("plate_reads"),
            default_mode="connect", message_type=PlateRead, hwm=10_000,
        )  # fmt: skip
        try:
            with FrameWriter("alpr.ocrtest.cam1", slot_count=64, max_height=360, max_width=640) as writer:
                scene = Scene(writer)
                procs.append(_spawn("ocr", config, ports["ocr"]))
                procs.append(_spawn("ocr-worker", config, ports["w1"]))
                _wait_metric(ports["ocr"], "alpr_ocr_workers_count", 1)
                # Worker 1 freezes (as a stuck or dying process would) and gets the first job.
                procs[1].send_signal(signal.SIGSTOP)
                for message in scene.frames(1, PLATES[0], 12):
                    await push.send(message, timeout=10)
                await asyncio.to_thread(_wait_metric, ports["ocr"], 'alpr_ocr_jobs_total{outcome="sent"}', 1)
                procs[1].kill()  # killed mid-job: the job must be re-sent to the next worker
                procs.append(_spawn("ocr-worker", config, ports["w2"]))
                reads = await _collect(pull, 1, 60)
                finals = [r for r in reads if r.final]
                assert len(finals) == 1, reads
                assert finals[0].text == truth[PLATES[0]]
                assert finals[0].plate_jpeg is not None and finals[0].plate_jpeg[:2] == b"\xff\xd8"
                assert finals[0].reads <= 5  # max_reads + the final read
                assert _metric(ports["ocr"], 'alpr_ocr_jobs_total{outcome="resent"}') >= 1

                # Two workers share the load: three more tracks at once.
                procs.append(_spawn("ocr-worker", config, ports["w3"]))
                # Joined: its hello went out (the killed worker 1 may still count until it expires).
                await asyncio.to_thread(_wait_metric, ports["w3"], "alpr_ocr_worker_messages_sent_total", 1)
                batches = [scene.frames(10 + k, image, 12) for k, image in enumerate(PLATES)]
                for step in range(13):
                    for batch in batches:
                        await push.send(batch[step], timeout=10)
                reads = await _collect(pull, len(PLATES), 60)
                by_track = {r.track_id: r for r in reads if r.final}
                assert sorted(by_track) == [10 + k for k in range(len(PLATES))]
                exact = sum(by_track[10 + k].text == truth[image] for k, image in enumerate(PLATES))
                assert exact >= len(PLATES) - 1
                for proc, port in ((procs[2], ports["w2"]), (procs[3], ports["w3"])):
                    assert proc.poll() is None, proc.communicate()[1][-3000:]
                    assert _metric(port, "alpr_ocr_worker_jobs_total") >= 1
                # Nothing arrives twice.
                assert await _collect(pull, 1, 0.5) == []
                for proc in procs[2:]:
                    proc.send_signal(signal.SIGTERM)
                procs[0].send_signal(signal.SIGTERM)
                for proc in [*procs[2:], procs[0]]:
                    _, err = await asyncio.to_thread(proc.communicate, timeout=30)
                    assert proc.returncode == 0, err[-3000:]
        finally:
            push.close()
            pull.close()
            zctx.destroy(linger=0)

    with _processes() as procs:
        asyncio.run(scenario(procs))
