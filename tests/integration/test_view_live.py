"""`alpr view` on the live edge pipeline, every stage its own process: ingest → detect → track → ocr
coordinator ⇄ worker (a test PULL stands in for events), the view listening beside them. Headless
Chromium loads the page; its screenshot must show the plate-track colour, the MJPEG stream must carry
annotated frames, the status must carry plate reads, and `--save-video` must leave a playable file."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import pytest
import yaml
import zmq.asyncio

from alpr_detect.models import ModelStore, default_models_dir, ensure_provisioned
from alpr_shared.framestore import SHM_DIR
from alpr_shared.schemas import PlateRead
from alpr_shared.tools.demovideo import make_demo_video
from alpr_shared.transport import open_socket
from alpr_shared.view.draw import COLOURS
from tests.harness.ports import free_port
from tests.harness.services import start_service, stop_service

pytestmark = pytest.mark.integration

MAGENTA = COLOURS["plate"]


def _magenta_pixels(img: np.ndarray, tol: int = 100) -> int:
    return int((np.abs(img[:, :, :3].astype(int) - np.array(MAGENTA)).sum(axis=2) < tol).sum())


def _start_view(config: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "alpr_shared.cli", "view", "-c", str(config), "--port", str(port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "ALPR_LOG__FORMAT": "json"},
        )


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: run scripts/install-system-deps.sh (Debian package chromium)"
    return path


def _screenshot(url: str, out: Path, profile: Path) -> np.ndarray:
    """Headless Chromium renders the page (the MJPEG <img> included) to a PNG."""
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1100,800",
        # The MJPEG stream never ends; give the page time to show frames, then take the picture.
        "--virtual-time-budget=4000",
        "--timeout=8000",
        f"--screenshot={out}",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert out.exists(), (
        f"chromium made no screenshot (exit {done.returncode}): {done.stderr.decode()[-2000:]}"
    )
    image = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


def _mjpeg_frames(url: str, count: int, timeout: float) -> Iterator[np.ndarray]:
    """The first `count` JPEG parts of a multipart/x-mixed-replace stream, decoded."""
    with httpx.Client(timeout=timeout) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        buffer = b""
        got = 0
        for chunk in response.iter_bytes():
            buffer += chunk
            while True:
                start = buffer.find(b"\xff\xd8")
                end = buffer.find(b"\xff\xd9", start + 2)
                if start < 0 or end < 0:
                    break
                jpeg, buffer = buffer[start : end + 2], buffer[end + 2 :]
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                assert image is not None
                yield np.asarray(image)
                got += 1
                if got >= count:
                    return


async def test_view_shows_the_annotated_pipeline_in_chromium(tmp_path: Path) -> None:
    store = ModelStore(default_models_dir())
    ensure_provisioned(store, "plate-yolov8n")
    video = make_demo_video(tmp_path / "demo.mp4", count=3, seconds_per_photo=4.0, fps=10, size=(960, 540))
    namespace = f"view{os.getpid()}"
    run = tmp_path / "run"
    config = tmp_path / "alpr.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_dir": str(run),
                "frame_store": {
                    "namespace": namespace,
                    "slots_per_camera": 32,
                    "max_width": 960,
                    "max_height": 540,
                },
                "cameras": [{"id": "gate", "source": str(video.path), "loop": True}],
                "detect": {
                    "models_dir": str(store.root),
                    "providers": ["CPUExecutionProvider"],
                    "input_size": 640,
                },
            }
        )
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    saved = tmp_path / "annotated.mp4"
    logs = {n: tmp_path / f"{n}.log" for n in ("view", "ocr", "ocr-worker", "track", "detect", "ingest")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ctx = zmq.asyncio.Context()
    # Stands in for events: plate reads are a reliable PUSH, someone must take them.
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

    async def collect_reads() -> None:
        while True:
            try:
                reads.append(await pull.recv(timeout=0.5))
            except TimeoutError:
                continue

    def all_logs() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-2500:]}" for n, p in logs.items() if p.exists())

    collector = asyncio.create_task(collect_reads())
    try:
        procs["view"] = _start_view(config, port, logs["view"], "--save-video", str(saved))
        for name in ("ocr", "ocr-worker", "track", "detect"):
            procs[name] = start_service(name, config, logs[name])
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 90
            while not (run / "detections.sock").exists():
                assert all(p.poll() is None for p in procs.values()), all_logs()
                assert time.monotonic() < deadline, "detect did not bind its socket\n" + all_logs()
                await asyncio.sleep(0.2)
            procs["ingest"] = start_service("ingest", config, logs["ingest"])

            deadline = time.monotonic() + 60
            while True:
                try:
                    health = (await client.get("/health")).json()
                    break
                except httpx.TransportError:
                    assert procs["view"].poll() is None, all_logs()
                    assert time.monotonic() < deadline, "the view did not answer\n" + all_logs()
                    await asyncio.sleep(0.2)
            assert health["status"] == "ok" and health["cameras"] == ["gate"]
            page = (await client.get("/")).text
            assert 'src="/stream/gate"' in page
            assert (await client.get("/stream/nope")).status_code == 404

            # An annotated frame: the snapshot shows a tracked plate's box.
            annotated = None
            deadline = time.monotonic() + 90
            while annotated is None:
                assert time.monotonic() < deadline, "no annotated frame\n" + all_logs()
                assert all(p.poll() is None for p in procs.values()), all_logs()
                response = await client.get("/snapshot/gate")
                if response.status_code == 200:
                    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
                    if image is not None and _magenta_pixels(image) > 150:
                        annotated = image
                await asyncio.sleep(0.3)
            assert annotated.shape == (540, 960, 3)

        # The MJPEG stream carries frames, annotated ones among them.
        frames = await asyncio.to_thread(lambda: list(_mjpeg_frames(f"{base}/stream/gate", 12, 30)))
        assert len(frames) == 12
        assert max(_magenta_pixels(f) for f in frames) > 150, "no box in 12 streamed frames"

        # Headless Chromium renders the page with the stream: the box colour is on screen.
        # The picture may fall in the dark gap between two cars (1.5 s of 5.5): a few tries.
        for attempt in range(4):
            shot = await asyncio.to_thread(
                _screenshot, f"{base}/", tmp_path / f"page{attempt}.png", tmp_path / "chromium"
            )
            if _magenta_pixels(shot) > 100:
                break
        assert _magenta_pixels(shot) > 100, "the page shows no annotated plate box"

        # Plate reads reach the view (its status) through the coordinator's monitor copy.
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 60
            status: dict[str, Any] = {}
            while time.monotonic() < deadline:
                status = (await client.get("/status")).json()["cameras"]["gate"]
                if status["reads"]:
                    break
                await asyncio.sleep(0.5)
            assert status["reads"], f"no plate read in the view: {json.dumps(status)}\n" + all_logs()
            assert status["fps_in"] and float(status["fps_in"]) > 5
            texts = {r["text"] for r in status["reads"]}
            assert texts & {r.text for r in reads}, "the view's reads are the pipeline's reads"
    finally:
        collector.cancel()
        codes = {name: stop_service(proc, timeout=30) for name, proc in reversed(list(procs.items()))}
        pull.close()
        ctx.destroy(linger=0)
    assert all(code == 0 for code in codes.values()), (codes, all_logs())
    assert not list(SHM_DIR.glob(f"alpr.{namespace}.*")), "ingest left its rings behind"

    # --save-video: a playable file of annotated frames at the camera's pace.
    with av.open(str(saved)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) >= 10, "too few frames saved"
    assert decoded[0].shape == (540, 960, 3)
    assert max(_magenta_pixels(f) for f in decoded) > 150, "the saved video has no annotation"


def test_view_refuses_bad_arguments_clearly(tmp_path: Path) -> None:
    config = tmp_path / "alpr.yaml"
    config.write_text(
        yaml.safe_dump({"runtime_dir": str(tmp_path / "run"), "cameras": [{"id": "gate", "source": "x.mp4"}]})
    )
    port = free_port()

    def view_with(cfg: Path, http_port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "alpr_shared.cli",
                "view",
                "-c",
                str(cfg),
                "--port",
                str(http_port),
                *args,
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )

    unknown = view_with(config, port, "--camera", "yard")
    assert unknown.returncode == 2 and b"camera 'yard' is not in the configuration" in unknown.stderr
    with_holder = _start_view(config, port, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 30
        while b"view_ready" not in (tmp_path / "first.log").read_bytes():
            assert with_holder.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = view_with(config, free_port())
        assert second.returncode == 1 and b"another view already listens" in second.stderr, second.stderr
        other = tmp_path / "other.yaml"  # its own monitor endpoint, but the first view's HTTP port
        other.write_text(yaml.safe_dump({"runtime_dir": str(tmp_path / "run2")}))
        taken = view_with(other, port)
        assert taken.returncode == 1 and b"cannot listen on 127.0.0.1" in taken.stderr, taken.stderr
    finally:
        with_holder.send_signal(signal.SIGTERM)
        assert with_holder.wait(20) == 0
