"""`alpr ingest` against real RTSP servers (GStreamer's, started by the harness): reconnection after the
server goes away mid-stream while another camera keeps running, credentials that never reach the logs,
UDP transport, and a camera whose server never answers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alpr_ingest.testing import IngestProcess, ensure_runtime_dir
from tests.harness import free_port
from tests.harness.rtsp import RtspServer

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, cameras: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runtime_dir": str(ensure_runtime_dir(tmp_path / "run")),
        "frame_store": {
            "namespace": f"rt{uuid.uuid4().hex[:8]}",
            "slots_per_camera": 8,
            "max_width": 640,
            "max_height": 480,
        },
        "ingest": {"status_interval_s": 1.0},
        "cameras": cameras,
    }


def test_server_stopped_mid_stream_reconnects_and_the_other_camera_keeps_running(
    tmp_path: Path, make_rtsp_server: Callable[..., RtspServer], rtsp_server: RtspServer
) -> None:
    flaky = make_rtsp_server()
    ingest = IngestProcess(
        tmp_path,
        _config(
            tmp_path,
            [
                # Short stall timeout and backoff so the test sees several retries in a few seconds.
                {
                    "id": "flaky",
                    "source": flaky.url(),
                    "transport": "tcp",
                    "stall_timeout_s": 2.0,
                    "backoff_min_s": 0.2,
                    "backoff_max_s": 1.0,
                },
                {"id": "steady", "source": rtsp_server.url("cam2"), "transport": "udp"},
            ],
        ),
        metrics_port=free_port(),
    )
    ingest.start()
    try:
        ingest.wait_for(
            lambda: ingest.count("flaky") >= 25 and ingest.count("steady") >= 25, 30, "both cameras"
        )
        assert ingest.metric("alpr_ingest_camera_connected_info", camera="flaky") == 1.0

        flaky.stop()  # the camera goes away mid-stream: every connection drops
        ingest.wait_for(
            lambda: bool(ingest.events("camera_disconnected", camera="flaky")), 15, "the disconnect"
        )
        steady_before = ingest.count("steady")
        flaky_before = ingest.count("flaky")
        # While it is down (and failing to reconnect, with backoff), the other camera carries on.
        ingest.wait_for(
            lambda: ingest.count("steady") >= steady_before + 50, 15, "the steady camera, meanwhile"
        )
        assert len(ingest.events("camera_connect_failed", camera="flaky")) >= 2
        assert ingest.count("flaky") == flaky_before
        assert ingest.metric("alpr_ingest_camera_connected_info", camera="flaky") == 0.0
        assert ingest.metric("alpr_ingest_camera_connected_info", camera="steady") == 1.0
        status = ingest.events("camera_status", camera="flaky")
        assert status and status[-1]["state"] in ("backoff", "connecting")

        flaky.start()  # same port, same URL
        ingest.wait_for(
            lambda: bool(ingest.events("camera_reconnected", camera="flaky")), 20, "the reconnect"
        )
        ingest.wait_for(lambda: ingest.count("flaky") >= flaky_before + 25, 20, "frames after the reconnect")
        reconnected = ingest.events("camera_reconnected", camera="flaky")[0]
        assert reconnected["gap_s"] >= 1.0  # the outage is reported as a gap in the stream
        assert (ingest.metric("alpr_ingest_camera_reconnects_total", camera="flaky") or 0) >= 2
        assert ingest.metric("alpr_ingest_camera_gap_seconds_count", camera="flaky") == 1.0
        assert ingest.metric("alpr_ingest_camera_reconnects_total", camera="steady") == 0.0

        # Frame numbers keep counting across the reconnect (the ring outlives the connection).
        seqs = [r.seq for r in ingest.received("flaky")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        frames = ingest.received("flaky")
        assert all(r.shape == (240, 320, 3) for r in frames)
        assert all(r.mean > 1.0 for r in frames), "frames read back from shared memory are black"
        # Capture timestamps are UTC wall clock and increase.
        stamps = [r.captured_at_ns for r in frames]
        assert stamps == sorted(stamps)
    finally:
        code = ingest.stop()
    assert code == 0, ingest.log_text()[-3000:]
    assert not ingest.events("service_failed")


def test_credentials_from_settings_connect_and_never_appear_in_logs(
    tmp_path: Path, make_rtsp_server: Callable[..., RtspServer]
) -> None:
    secret = "pa:ss@w0rd-" + uuid.uuid4().hex[:6]
    server = make_rtsp_server(username="alice", password=secret)
    ingest = IngestProcess(
        tmp_path,
        _config(
            tmp_path,
            [
                {"id": "good", "source": server.url(), "username": "alice", "password": secret},
                # Wrong password in the URL itself: refused (401), retried, and still not logged.
                {
                    "id": "bad",
                    "source": server.url().replace("rtsp://", "rtsp://alice:wrong-" + secret[-6:] + "@"),
                    "backoff_min_s": 0.2,
                    "backoff_max_s": 0.5,
                },
            ],
        ),
        metrics_port=free_port(),
    )
    ingest.start()
    try:
        ingest.wait_for(lambda: ingest.count("good") >= 10, 30, "frames through basic auth")
        ingest.wait_for(
            lambda: len(ingest.events("camera_connect_failed", camera="bad")) >= 2, 20, "refusals"
        )
        failure = ingest.events("camera_connect_failed", camera="bad")[0]
        assert "401" in failure["error"] or "Unauthorized" in failure["error"]
    finally:
        ingest.stop()
    text = ingest.log_text()
    assert secret not in text
    assert "wrong-" not in text
    assert "***@" in text  # URLs are logged, redacted


def test_a_camera_that_never_connects_is_retried_forever_without_blocking_startup(
    tmp_path: Path, rtsp_server: RtspServer
) -> None:
    dead_port = free_port()  # nothing listens there
    ingest = IngestProcess(
        tmp_path,
        _config(
            tmp_path,
            [
                {
                    "id": "ghost",
                    "source": f"rtsp://127.0.0.1:{dead_port}/cam",
                    "connect_timeout_s": 1.0,
                    "backoff_min_s": 0.1,
                    "backoff_max_s": 0.4,
                },
                {"id": "live", "source": rtsp_server.url("cam")},
            ],
        ),
        metrics_port=free_port(),
    )
    ingest.start()
    try:
        ingest.wait_for(
            lambda: len(ingest.events("camera_connect_failed", camera="ghost")) >= 4, 20, "retries"
        )
        ingest.wait_for(lambda: ingest.count("live") >= 25, 20, "the live camera")
        delays = [e["retry_in_s"] for e in ingest.events("camera_connect_failed", camera="ghost")]
        assert all(0.1 <= d <= 0.4 for d in delays)
        assert ingest.metric("alpr_ingest_camera_last_frame_age_seconds", camera="ghost") == -1.0
        assert 0 <= (ingest.metric("alpr_ingest_camera_last_frame_age_seconds", camera="live") or -1) < 2
    finally:
        assert ingest.stop() == 0
