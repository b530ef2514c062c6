"""`alpr ingest` on files and folders, as its own process: pacing at the file's rate, the fps cap, corrupt
and truncated files (clear errors, no crash), regions of interest, looping, and SIGHUP reloads that add,
change and remove cameras without touching the others."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from alpr_ingest.synth import write_h264
from alpr_ingest.testing import IngestProcess, ensure_runtime_dir
from tests.harness import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 25 fps H.264 (50 frames), 320×240."""
    return write_h264(
        tmp_path_factory.mktemp("video") / "clip.mp4", seconds=2.0, fps=25, width=320, height=240
    )


def _config(tmp_path: Path, cameras: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runtime_dir": str(ensure_runtime_dir(tmp_path / "run")),
        "frame_store": {
            "namespace": f"fi{uuid.uuid4().hex[:8]}",
            "slots_per_camera": 8,
            "max_width": 640,
            "max_height": 480,
        },
        "ingest": {"status_interval_s": 0.5},
        "cameras": cameras,
    }


def _run(tmp_path: Path, cameras: list[dict[str, Any]]) -> IngestProcess:
    ingest = IngestProcess(tmp_path, _config(tmp_path, cameras), metrics_port=free_port())
    ingest.start()
    return ingest


def _finished(ingest: IngestProcess, camera: str) -> bool:
    return bool(ingest.events("camera_finished", camera=camera))


def test_realtime_pacing_fps_cap_and_as_fast_as_possible(tmp_path: Path, video: Path) -> None:
    ingest = _run(
        tmp_path,
        [
            {"id": "paced", "source": str(video)},
            {"id": "capped", "source": str(video), "target_fps": 10},
            {"id": "fast", "source": str(video), "realtime": False},
        ],
    )
    try:
        ingest.wait_for(
            lambda: all(_finished(ingest, c) for c in ("paced", "capped", "fast")), 30, "the files"
        )
        published = ingest.metric("alpr_ingest_frames_total", camera="capped")
        dropped = ingest.metric("alpr_ingest_frames_dropped_total", camera="capped", reason="fps_cap")
        fast_total = ingest.metric("alpr_ingest_frames_total", camera="fast")
    finally:
        assert ingest.stop() == 0

    paced = ingest.received("paced")
    # The first frames may go out before our subscription is live (PUB/SUB); after that, none is lost.
    assert len(paced) >= 45
    assert [r.seq for r in paced] == list(range(paced[0].seq, 51))
    span = paced[-1].at - paced[0].at
    expected = (paced[-1].pts or 0) - (paced[0].pts or 0)
    assert expected == pytest.approx((len(paced) - 1) / 25, abs=0.05)
    assert span == pytest.approx(expected, abs=0.35), "realtime: released at the file's own rate"

    capped = ingest.received("capped")
    assert len(capped) >= 17
    gaps = np.diff([r.pts for r in capped if r.pts is not None])
    assert gaps.max() <= 0.121 and gaps.min() >= 0.079, "kept frames are spread evenly, not bunched"
    assert published is not None and dropped is not None
    assert published + dropped == 50, "every decoded frame is either published or counted as dropped"
    assert 19 <= published <= 21

    # As fast as possible: done long before the file's 2 s (it may even finish before a subscriber joins).
    assert fast_total == 50
    started = datetime.fromisoformat(ingest.events("camera_connected", camera="fast")[0]["timestamp"])
    ended = datetime.fromisoformat(ingest.events("camera_finished", camera="fast")[0]["timestamp"])
    assert (ended - started).total_seconds() < 1.0, "realtime: false releases frames as fast as they decode"


def test_truncated_and_corrupt_files_give_clear_errors_and_no_crash(tmp_path: Path, video: Path) -> None:
    data = video.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: unreadable
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 64)
    # Raw H.264 with damaged bytes in the middle: decodes, with errors counted and frames skipped.
    corrupt = tmp_path / "corrupt.h264"
    write_h264(corrupt, seconds=2.0, fps=25, width=320, height=240, gop=10)
    raw = bytearray(corrupt.read_bytes())
    for i in range(len(raw) // 3, 2 * len(raw) // 3, 41):
        raw[i] ^= 0x5A
    corrupt.write_bytes(bytes(raw))
    ingest = _run(
        tmp_path,
        [
            {"id": "trunc", "source": str(truncated), "backoff_min_s": 0.2, "backoff_max_s": 0.5},
            {"id": "garbage", "source": str(garbage), "backoff_min_s": 0.2, "backoff_max_s": 0.5},
            {"id": "corrupt", "source": str(corrupt), "realtime": False, "decoder_threads": 1},
            {
                "id": "missing",
                "source": str(tmp_path / "nope.mp4"),
                "backoff_min_s": 0.2,
                "backoff_max_s": 0.5,
            },
            {"id": "good", "source": str(video)},
        ],
    )
    try:
        ingest.wait_for(
            lambda: _finished(ingest, "good") and _finished(ingest, "corrupt"), 30, "the good files"
        )
        for cam in ("trunc", "garbage", "missing"):

            def retried(c: str = cam) -> bool:
                return len(ingest.events("camera_connect_failed", camera=c)) >= 2

            ingest.wait_for(retried, 10, cam)
        errors = {
            c: ingest.events("camera_connect_failed", camera=c)[0]["error"] for c in ("trunc", "garbage")
        }
        missing = ingest.events("camera_connect_failed", camera="missing")[0]["error"]
        decode_errors = ingest.metric("alpr_ingest_decode_errors_total", camera="corrupt")
        corrupt_frames = ingest.metric("alpr_ingest_frames_total", camera="corrupt")
        assert ingest.alive
    finally:
        assert ingest.stop() == 0
    for cam, error in errors.items():
        assert "cannot open file source" in error and "Invalid data" in error, (cam, error)
    assert "does not exist" in missing
    assert len(ingest.received("good")) >= 45
    # As fast as possible, so a subscriber may miss some; the counters say what ingest did with all 50.
    assert corrupt_frames is not None and decode_errors is not None
    assert corrupt_frames >= 25 and decode_errors >= 1
    assert corrupt_frames + decode_errors <= 50  # a damaged frame is skipped, never published
    assert not ingest.events("service_failed") and not ingest.events("camera_session_crashed")


def test_image_folder_with_roi_and_loop(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        image = np.full((120, 200, 3), 40 * (i + 1), dtype=np.uint8)
        cv2.imwrite(str(folder / f"img{i}.png"), image)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored")
    ingest = _run(
        tmp_path,
        [
            {"id": "eval", "source": str(folder), "realtime": False},
            {
                "id": "looped",
                "source": str(folder),
                "loop": True,
                "target_fps": 20,
                "roi": {"x": 11, "y": 21, "width": 51, "height": 41},
            },
        ],
    )
    try:
        ingest.wait_for(lambda: _finished(ingest, "eval"), 20, "the folder")
        ingest.wait_for(lambda: ingest.count("looped") >= 8, 20, "a looped folder")
        eval_frames = ingest.metric("alpr_ingest_frames_total", camera="eval")
        eval_errors = ingest.metric("alpr_ingest_decode_errors_total", camera="eval")
    finally:
        assert ingest.stop() == 0
    assert eval_frames == 3  # every image once (as fast as possible: maybe before we subscribed)
    assert eval_errors == 1  # the broken one, skipped; the .txt is not an image
    looped = ingest.received("looped")
    assert all(f.shape == (41, 51, 3) for f in looped)  # BGR sources crop exactly
    means = [round(f.mean) for f in looped]
    first = means.index(40)
    assert means[first : first + 6] == [40, 80, 120, 40, 80, 120]  # name order, looped


def test_roi_on_a_video_is_cropped_before_the_ring(tmp_path: Path, video: Path) -> None:
    ingest = _run(
        tmp_path,
        [
            {
                "id": "roi",
                "source": str(video),
                "realtime": False,
                "roi": {"x": 33, "y": 17, "width": 101, "height": 61},
            }
        ],
    )
    try:
        ingest.wait_for(lambda: _finished(ingest, "roi"), 20, "the file")
    finally:
        assert ingest.stop() == 0
    shapes = {f.shape for f in ingest.received("roi")}
    assert shapes == {(60, 100, 3)}  # 4:2:0 frames crop on even pixels


def test_sighup_adds_changes_and_removes_cameras_without_restarting_the_others(
    tmp_path: Path, video: Path
) -> None:
    base = {"id": "keep", "source": str(video), "loop": True}
    ingest = _run(tmp_path, [base])
    try:
        ingest.wait_for(lambda: ingest.count("keep") >= 10, 20, "the first camera")
        cfg = _config(tmp_path, [])
        cfg["frame_store"] = ingest.config["frame_store"]
        cfg["runtime_dir"] = ingest.config["runtime_dir"]
        cfg["cameras"] = [base, {"id": "added", "source": str(video), "loop": True, "target_fps": 5}]
        ingest.write_config(cfg)
        ingest.sighup()
        ingest.wait_for(lambda: ingest.count("added") >= 5, 20, "the added camera")
        reloaded = ingest.events("cameras_reloaded")[0]
        assert reloaded["added"] == ["added"] and reloaded["changed"] == [] and reloaded["unchanged"] == 1
        assert len(ingest.events("camera_connected", camera="keep")) == 1, "the unchanged camera restarted"
        keep_seqs = [r.seq for r in ingest.received("keep")]
        assert keep_seqs == sorted(keep_seqs), "its frame numbers never started again"

        # Change one camera and remove the other.
        cfg["cameras"] = [{**base, "target_fps": 5}]
        ingest.write_config(cfg)
        ingest.sighup()
        ingest.wait_for(lambda: len(ingest.events("cameras_reloaded")) >= 2, 20, "the second reload")
        second = ingest.events("cameras_reloaded")[1]
        assert second["removed"] == ["added"] and second["changed"] == ["keep"]
        ingest.wait_for(lambda: len(ingest.events("camera_connected", camera="keep")) == 2, 20, "the restart")
        assert ingest.metric("alpr_ingest_frames_total", camera="added") is None  # its series are gone

        # A broken file is rejected and the running cameras stay as they are.
        ingest.config_path.write_text("cameras: [{id: x}]\n")
        ingest.sighup()
        ingest.wait_for(lambda: bool(ingest.events("reload_rejected")), 20, "the rejection")
        before = ingest.count("keep")
        ingest.wait_for(lambda: ingest.count("keep") > before + 3, 20, "frames after a rejected reload")
    finally:
        assert ingest.stop() == 0
