"""Sources without a service around them: what kind a source is, credentials in and out of URLs, the
region of interest on 4:2:0 and BGR frames, files and folders decoded in process, and the GStreamer
pipelines the presets build."""

from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from alpr_ingest.gst import decode_pipeline
from alpr_ingest.sources import (
    EndOfSource,
    I420Picture,
    ImageFolderSource,
    PyAVSource,
    SourceError,
    crop_i420,
    open_source,
    roi_box,
    scrub,
    source_kind,
    source_url,
)
from alpr_ingest.synth import write_h264
from alpr_shared.settings import CameraSettings, ConfigError, RegionOfInterest, load_settings

GST = Path("/usr/bin/python3")


def _cam(**kw: object) -> CameraSettings:
    return CameraSettings.model_validate({"id": "c1", "source": "rtsp://10.0.0.5:554/stream1", **kw})


def test_source_kinds(tmp_path: Path) -> None:
    assert source_kind("rtsp://h/x") == "rtsp"
    assert source_kind("RTSPS://h/x") == "rtsp"
    assert source_kind("http://h/mjpg") == "http"
    assert source_kind("/dev/video0") == "v4l2"
    assert source_kind(str(tmp_path)) == "images"
    assert source_kind(str(tmp_path / "a.mp4")) == "file"
    with pytest.raises(SourceError, match="unsupported source scheme") as info:
        source_kind("ftp://bob:hunter2@h/x")
    assert "hunter2" not in str(info.value)


def test_credentials_go_into_the_url_and_never_out_of_it() -> None:
    cam = _cam(username="ad min", password="p@ss:w/rd")  # noqa: S106 - a test credential
    url = source_url(cam)
    assert url == "rtsp://ad%20min:p%40ss%3Aw%2Frd@10.0.0.5:554/stream1"
    text = f"Invalid data found: '{url}' (password p@ss:w/rd)"
    clean = scrub(text, cam)
    assert "p@ss" not in clean and "p%40ss" not in clean
    assert "rtsp://***@10.0.0.5:554/stream1" in clean
    assert "p@ss" not in repr(cam) and "p@ss" not in str(cam.model_dump())
    inline = CameraSettings(id="c2", source="rtsp://bob:hunter2@h/x")
    assert "hunter2" not in scrub("failed: rtsp://bob:hunter2@h/x; hunter2", inline)


def test_camera_settings_reject_incomplete_decoder_and_credential_choices(tmp_path: Path) -> None:
    cases = {
        "decoder: gstreamer": "exactly one of gstreamer_preset or gstreamer_pipeline",
        "gstreamer_preset: jetson": "decoder is not gstreamer",
        "{backoff_min_s: 5, backoff_max_s: 1}": "backoff_min_s must not exceed backoff_max_s",
        "password: x": "password is set without username",
        "transport: quic": "transport",
        "stall_timeout_s: 0": "stall_timeout_s",
    }
    for extra, message in cases.items():
        body = extra if extra.startswith("{") else "{" + extra + "}"
        fields = body.strip("{}")
        config = tmp_path / "c.yaml"
        config.write_text(f"cameras: [{{id: a, source: 'rtsp://h/x', {fields}}}]\n")
        with pytest.raises(ConfigError, match=message):
            load_settings(config)
    config.write_text("cameras: [{id: a, source: 'rtsp://u:p@h/x', username: u}]\n")
    with pytest.raises(ConfigError, match="both in the source URL and as username"):
        load_settings(config)


def test_roi_box_clips_and_aligns() -> None:
    roi = RegionOfInterest(x=33, y=17, width=101, height=61)
    assert roi_box(roi, 240, 320, even=False) == (33, 17, 101, 61)
    assert roi_box(roi, 240, 320, even=True) == (32, 16, 100, 60)
    big = RegionOfInterest(x=300, y=200, width=500, height=500)
    assert roi_box(big, 240, 320, even=False) == (300, 200, 20, 40)
    assert roi_box(None, 240, 320, even=True) == (0, 0, 320, 240)


def test_i420_crop_converts_to_the_same_pixels_as_cropping_after_conversion() -> None:
    rng = np.random.default_rng(3)
    bgr = cv2.resize(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), (320, 240))
    i420 = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
    full = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    box = (32, 16, 100, 60)
    cropped = crop_i420(i420, 240, 320, box)
    dest = np.zeros((60, 100, 3), dtype=np.uint8)
    I420Picture(cropped, 60, 100).write_into(dest)
    np.testing.assert_array_equal(dest, full[16:76, 32:132])


def test_pictures_are_written_straight_into_the_destination() -> None:
    i420 = np.full((360, 320), 128, dtype=np.uint8)
    i420[:240] = 200
    backing = np.zeros((240 * 320 * 3 + 64,), dtype=np.uint8)
    dest = backing[64:].reshape(240, 320, 3)  # a view, like a ring slot
    I420Picture(i420, 240, 320).write_into(dest)
    assert backing[64:].min() > 150 and backing[:64].max() == 0


def test_file_source_decodes_loops_and_reports_timestamps(tmp_path: Path) -> None:
    video = write_h264(tmp_path / "v.mkv", seconds=0.4, fps=25, width=64, height=48)
    source = open_source(CameraSettings(id="f", source=str(video), loop=True), gstreamer_python=GST)
    assert isinstance(source, PyAVSource) and not source.live and source.fps == pytest.approx(25)
    pts = []
    try:
        for i, decoded in enumerate(source.frames()):
            pts.append(decoded.pts)
            assert decoded.picture().shape == (48, 64, 3)
            if i == 24:
                break
    finally:
        source.close()
    assert pts[:10] == pytest.approx([i / 25 for i in range(10)])
    assert pts[10:20] == pytest.approx([i / 25 for i in range(10)])  # looped: starts again at 0

    once = open_source(CameraSettings(id="f", source=str(video)), gstreamer_python=GST)
    with pytest.raises(EndOfSource):
        for _ in once.frames():
            pass
    once.close()


def test_unreadable_files_raise_a_clear_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match=r"cannot open file source.*Invalid data"):
        open_source(CameraSettings(id="b", source=str(bad)), gstreamer_python=GST)
    with pytest.raises(SourceError, match="does not exist"):
        open_source(CameraSettings(id="b", source=str(tmp_path / "none.mp4")), gstreamer_python=GST)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource(CameraSettings(id="b", source=str(empty)))
    audio = tmp_path / "tone.wav"
    with wave.open(str(audio), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 800)
    with pytest.raises(SourceError, match="no video stream"):
        open_source(CameraSettings(id="b", source=str(audio)), gstreamer_python=GST)


def test_gstreamer_presets_build_real_pipelines() -> None:
    secret = "s3cret"  # noqa: S105 - a test credential
    cam = _cam(decoder="gstreamer", gstreamer_preset="jetson", username="u", password=secret, transport="udp")
    pipeline = decode_pipeline(cam, "rtsp")
    assert pipeline.startswith('rtspsrc location="rtsp://u:s3cret@10.0.0.5:554/stream1" protocols=udp')
    assert "rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx" in pipeline
    desktop = _cam(decoder="gstreamer", gstreamer_preset="nvidia", codec="h265", source="/data/a b.mp4")
    assert (
        decode_pipeline(desktop, "file")
        == 'filesrc location="/data/a b.mp4" ! parsebin ! h265parse ! nvh265dec'
    )
    custom = _cam(decoder="gstreamer", gstreamer_pipeline="rtspsrc location={location} ! decodebin")
    assert decode_pipeline(custom, "rtsp") == 'rtspsrc location="rtsp://10.0.0.5:554/stream1" ! decodebin'
    with pytest.raises(SourceError, match="write a gstreamer_pipeline"):
        decode_pipeline(_cam(decoder="gstreamer", gstreamer_preset="software", source="http://h/m"), "http")
