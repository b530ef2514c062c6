"""What the view draws when: detections drawn on their own frame after the render delay, with the track
and read of that frame; rates; raw frames when detect is silent; one camera only with --camera."""

from __future__ import annotations

import pytest

from alpr_shared.schemas import Box, Detection, FrameDetections, FrameReady, FrameRef, PlateRead, TrackMessage
from alpr_shared.settings import ViewSettings
from alpr_shared.view.state import RateMeter, ViewState

SETTINGS = ViewSettings(render_delay_s=0.1, max_fps=10, raw_after_s=1.0, read_hold_s=2.0)


def _ref(seq: int, epoch: int = 1) -> FrameRef:
    return FrameRef(
        segment="alpr.t.gate", epoch=epoch, slot=seq % 16, seq=seq, height=720, width=1280, channels=3
    )


def _frame(seq: int, camera: str = "gate") -> FrameReady:
    return FrameReady(camera_id=camera, frame=_ref(seq), captured_at_ns=seq * 10**8, published_at_ns=seq)


def _dets(seq: int, boxes: list[Box], camera: str = "gate") -> FrameDetections:
    return FrameDetections(
        camera_id=camera,
        frame=_ref(seq),
        captured_at_ns=seq * 10**8,
        detections=[Detection(box=b, score=0.8, label="plate") for b in boxes],
        backend="test",
        inference_ms=1.0,
    )


def _track(seq: int, track_id: int, box: Box, phase: str = "updated") -> TrackMessage:
    return TrackMessage(
        camera_id="gate",
        track_id=track_id,
        phase=phase,  # type: ignore[arg-type]
        frame=_ref(seq) if phase != "ended" else None,
        captured_at_ns=seq * 10**8,
        plate_box=box if phase != "ended" else None,
        plate_score=0.8,
    )


def _read(track_id: int, text: str, final: bool = False) -> PlateRead:
    return PlateRead(camera_id="gate", track_id=track_id, final=final, text=text, confidence=0.9)


def test_detections_are_drawn_on_their_frame_with_the_track_and_its_read() -> None:
    state = ViewState(SETTINGS, cameras=["gate"])
    plate = Box(100, 100, 200, 140)
    stray = Box(600, 300, 650, 320)
    state.on_detections(_dets(5, [plate, stray]), now=10.0)
    assert state.due(10.05) == [], "not before the render delay"
    state.on_track(_track(5, 42, Box(101, 101, 201, 141)), now=10.06)
    state.on_read(_read(42, "ABC123"), now=10.07)
    [render] = state.due(10.11)
    assert render.frame.seq == 5 and render.camera_id == "gate"
    kinds = {(b.kind, b.track_id, b.text) for b in render.overlay.boxes}
    # The tracked plate carries its id and read; the detection it came from is not drawn twice; the
    # untracked detection is drawn as such.
    assert kinds == {("plate", 42, "ABC123"), ("detection", None, None)}
    assert state.due(10.2) == [], "each detection set is drawn once"


def test_only_the_newest_due_frame_is_drawn_and_the_rate_is_capped() -> None:
    state = ViewState(SETTINGS, cameras=["gate"])
    for i in range(5):
        state.on_detections(_dets(i + 1, []), now=1.0 + i * 0.01)
    [render] = state.due(2.0)
    assert render.frame.seq == 5
    state.on_detections(_dets(6, []), now=2.0)
    assert state.due(2.05) == [], "not before the render delay"
    assert state.due(2.2, max_fps=2) == [], "2 fps: nothing within 0.5 s of the last drawn; 6 is skipped"
    state.on_detections(_dets(7, []), now=2.6)
    assert [r.frame.seq for r in state.due(2.71, max_fps=2)] == [7]


def test_raw_frames_are_shown_when_detect_is_silent() -> None:
    state = ViewState(SETTINGS, cameras=["gate"])
    state.on_frame(_frame(1), now=0.0)
    [render] = state.due(0.01)
    assert render.frame.seq == 1 and render.overlay.note == "no detections yet" and not render.overlay.boxes
    assert state.due(0.5) == [], "the same raw frame is not drawn twice"
    state.on_detections(_dets(2, []), now=1.0)
    state.on_frame(_frame(3), now=1.2)
    assert [r.overlay.note for r in state.due(1.2)] == [None], "detections win while they come"
    state.on_frame(_frame(4), now=2.5)
    [render] = state.due(2.5)
    assert render.frame.seq == 4 and render.overlay.note == "no recent detections"


def test_input_rate_counts_frames_the_view_never_received() -> None:
    state = ViewState(SETTINGS)
    for i in range(11):
        state.on_frame(_frame(1 + 3 * i), now=i * 0.2)  # every third frame of a 15 fps camera
    rate = state.camera("gate").fps_in.rate(2.0)
    assert rate == pytest.approx(15.0)


def test_reads_expire_after_the_track_ended() -> None:
    state = ViewState(SETTINGS)
    state.on_track(_track(1, 9, Box(0, 0, 10, 5)), now=0.0)
    state.on_read(_read(9, "XY12", final=True), now=0.5)
    state.on_read(_read(9, "XY12", final=True), now=0.6)
    state.on_track(_track(2, 9, Box(0, 0, 10, 5), phase="ended"), now=1.0)
    status = state.status(1.1)["gate"]
    assert status["plates_read"] == 1 and status["open_tracks"] == 0
    assert status["reads"] == [{"track_id": 9, "text": "XY12", "confidence": 0.9, "final": True}]
    state.due(3.5)  # past read_hold_s after the end
    assert state.status(3.5)["gate"]["reads"] == []


def test_camera_filter_ignores_other_cameras() -> None:
    state = ViewState(SETTINGS, cameras=["gate"], only="gate")
    state.on_frame(_frame(1, camera="yard"), now=0.0)
    state.on_detections(_dets(1, [], camera="yard"), now=0.0)
    assert list(state.cameras) == ["gate"]


def test_rate_meter() -> None:
    meter = RateMeter(window_s=1.0)
    assert meter.rate(0.0) is None
    for i in range(21):
        meter.add(i * 0.1)
    assert meter.rate(2.0) == pytest.approx(10.0)
    assert meter.rate(10.0) == 0.0, "nothing for longer than the window"
