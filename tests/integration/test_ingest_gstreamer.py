"""The GStreamer decoder path of `alpr ingest`: the `software` preset (avdec) runs here against the real RTSP
server and a file; the NVIDIA presets (jetson: nvv4l2decoder, nvidia: nvh264dec) run the same test where
their GStreamer plugins exist and skip with the reason everywhere else."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from alpr_ingest.gst import missing_elements
from alpr_ingest.synth import write_h264
from alpr_ingest.testing import IngestProcess, ensure_runtime_dir
from alpr_shared.settings import IngestSettings
from tests.harness import free_port
from tests.harness.rtsp import RtspServer

pytestmark = pytest.mark.integration

GST_PYTHON = IngestSettings().gstreamer_python


def _config(tmp_path: Path, cameras: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runtime_dir": str(ensure_runtime_dir(tmp_path / "run")),
        "frame_store": {
            "namespace": f"gs{uuid.uuid4().hex[:8]}",
            "slots_per_camera": 8,
            "max_width": 640,
            "max_height": 480,
        },
        "cameras": cameras,
    }


def _require(preset: str) -> None:
    missing = missing_elements(preset, "h264", GST_PYTHON)
    if missing:
        if preset == "software":
            pytest.fail(
                f"GStreamer software decoding must work here; missing: {missing} "
                "(run scripts/install-system-deps.sh)"
            )
        pytest.skip(
            f"SKIPPED LOUDLY: GStreamer preset {preset!r} needs {missing}, absent on this machine "
            "(no NVIDIA GPU / plugins); this test runs on Jetson or a desktop GPU with them"
        )


@pytest.mark.parametrize("preset", ["software", "jetson", "nvidia"])
def test_gstreamer_preset_decodes_rtsp_and_files(
    preset: str, tmp_path: Path, rtsp_server: RtspServer
) -> None:
    _require(preset)
    video = write_h264(tmp_path / "clip.mkv", seconds=2.0, fps=25, width=320, height=240)
    common = {"decoder": "gstreamer", "gstreamer_preset": preset}
    ingest = IngestProcess(
        tmp_path,
        _config(
            tmp_path,
            [
                {"id": "rtsp", "source": rtsp_server.url("cam"), **common},
                {"id": "file", "source": str(video), **common},
                {
                    "id": "roi",
                    "source": str(video),
                    "roi": {"x": 10, "y": 10, "width": 101, "height": 51},
                    **common,
                },
            ],
        ),
        metrics_port=free_port(),
    )
    ingest.start()
    try:
        ingest.wait_for(lambda: ingest.count("rtsp") >= 25, 30, "RTSP frames through GStreamer")
        ingest.wait_for(lambda: bool(ingest.events("camera_finished", camera="file")), 30, "the file")
        file_total = ingest.metric("alpr_ingest_frames_total", camera="file")
    finally:
        assert ingest.stop() == 0
    assert {r.shape for r in ingest.received("rtsp")} == {(240, 320, 3)}
    assert all(r.mean > 1.0 for r in ingest.received("rtsp"))
    assert file_total == 50
    assert {r.shape for r in ingest.received("roi")} == {(51, 101, 3)}
    pts = [r.pts for r in ingest.received("file")]
    assert all(p is not None for p in pts) and pts == sorted(pts)  # type: ignore[type-var]


def test_gstreamer_custom_pipeline_and_a_broken_one(tmp_path: Path, rtsp_server: RtspServer) -> None:
    _require("software")
    ingest = IngestProcess(
        tmp_path,
        _config(
            tmp_path,
            [
                {
                    "id": "custom",
                    "source": rtsp_server.url("cam2"),
                    "decoder": "gstreamer",
                    "gstreamer_pipeline": "rtspsrc location={location} latency=100 ! rtph264depay ! avdec_h264",
                },
                {
                    "id": "broken",
                    "source": rtsp_server.url("cam2"),
                    "decoder": "gstreamer",
                    "gstreamer_pipeline": "rtspsrc location={location} ! no_such_element_x",
                    "backoff_min_s": 0.2,
                    "backoff_max_s": 0.5,
                },
            ],
        ),
        metrics_port=free_port(),
    )
    ingest.start()
    try:
        ingest.wait_for(lambda: ingest.count("custom") >= 25, 30, "frames from a custom pipeline")
        ingest.wait_for(
            lambda: len(ingest.events("camera_connect_failed", camera="broken")) >= 2, 30, "retries"
        )
    finally:
        assert ingest.stop() == 0
    error = ingest.events("camera_connect_failed", camera="broken")[0]["error"]
    assert "no_such_element_x" in error or "no element" in error
