"""CameraTracker: plate tracks linked to vehicles, lifecycle messages, zones, counting line, direction,
stationary (parked) vehicles — on synthetic sequences whose ground truth is known."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import pytest

from alpr_shared.schemas import TrackMessage
from alpr_shared.settings import TrackCameraSettings, TrackSettings
from alpr_track.camera import CameraTracker
from alpr_track.synthetic import SimObject, simulate, to_message

SIZE = (1920, 1080)


def track(
    objects: list[SimObject],
    frames: int,
    camera: dict[str, Any] | None = None,
    *,
    settings: TrackSettings | None = None,
    end: bool = True,
) -> list[TrackMessage]:
    ids = itertools.count(1)
    cam = TrackCameraSettings.model_validate(camera or {})
    tracker = CameraTracker("cam1", settings or TrackSettings(), cam, lambda: next(ids))
    out: list[TrackMessage] = []
    for frame in simulate(objects, frames, SIZE):
        out.extend(tracker.update(to_message(frame)))
    if end:
        out.extend(tracker.end_all())
    return out


def by_track(messages: list[TrackMessage]) -> dict[int, list[TrackMessage]]:
    out: dict[int, list[TrackMessage]] = defaultdict(list)
    for m in messages:
        out[m.track_id].append(m)
    return dict(out)


def assert_lifecycle(messages: list[TrackMessage]) -> None:
    """started first, then only updates, ended last and once; frames on all but ended."""
    assert messages[0].phase == "started"
    assert messages[-1].phase == "ended"
    assert all(m.phase == "updated" for m in messages[1:-1])
    assert all(m.frame is not None for m in messages[:-1])
    assert messages[-1].frame is None
    assert messages[-1].end_reason is not None
    assert all(m.end_reason is None for m in messages[:-1])


def test_plate_inherits_vehicle_track_class_and_direction() -> None:
    # A truck drives down the image (towards the camera) and out of view at the bottom.
    truck = SimObject(1, (900, 150), (0, 14), (300, 220), label="truck", plate=True)
    messages = track(
        [truck], 90, {"direction": {"vector": [0, 1], "forward": "approaching", "backward": "leaving"}}
    )
    tracks = by_track(messages)
    assert len(tracks) == 1
    (msgs,) = tracks.values()
    assert_lifecycle(msgs)
    assert msgs[-1].end_reason == "left_frame"
    vehicle_ids = {m.vehicle_track_id for m in msgs}
    assert len(vehicle_ids) == 1
    assert None not in vehicle_ids
    assert vehicle_ids != {msgs[0].track_id}  # the vehicle has its own track id
    assert {m.vehicle_class for m in msgs} == {"truck"}
    assert msgs[-1].direction == "approaching"
    assert msgs[-1].vehicle_box is not None
    assert msgs[-1].hits >= 60
    assert msgs[-1].first_seen_ns == msgs[0].captured_at_ns
    # Each update names the frame it was seen on, for OCR's best-shot choice.
    seqs = [m.frame.seq for m in msgs[:-1] if m.frame is not None]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def test_raw_direction_without_labels_and_leaving() -> None:
    car = SimObject(1, (900, 900), (0, -12), (260, 180), plate=True)
    msgs = next(iter(by_track(track([car], 40)).values()))
    assert msgs[-1].direction == "up"
    msgs = next(iter(by_track(track([car], 40, {"direction": {}})).values()))
    assert msgs[-1].direction == "leaving"


def test_plate_without_vehicle_is_tracked() -> None:
    # A motorcycle the vehicle detector misses: only its plate is detected.
    car = SimObject(1, (400, 600), (10, 0), (260, 180), plate=True)
    ids = itertools.count(1)
    tracker = CameraTracker("cam1", TrackSettings(), None, lambda: next(ids))
    out: list[TrackMessage] = []
    for frame in simulate([car], 30, SIZE):
        frame.detections = [d for d in frame.detections if d.label == "plate"]
        out.extend(tracker.update(to_message(frame)))
    out.extend(tracker.end_all())
    (msgs,) = by_track(out).values()
    assert_lifecycle(msgs)
    assert {m.vehicle_track_id for m in msgs} == {None}
    assert msgs[-1].end_reason == "shutdown"
    assert msgs[-1].direction == "right"  # from the plate's own motion


def test_two_vehicles_each_get_their_own_plate_track() -> None:
    a = SimObject(1, (300, 500), (12, 0), (260, 180), plate=True)
    b = SimObject(2, (1600, 520), (-12, 0), (260, 180), plate=True)
    tracks = by_track(track([a, b], 100))
    assert len(tracks) == 2
    for msgs in tracks.values():
        assert_lifecycle(msgs)
        # The plate stays with one vehicle through the crossing.
        assert len({m.vehicle_track_id for m in msgs}) == 1
    assert {msgs[-1].direction for msgs in tracks.values()} == {"left", "right"}


def test_parked_vehicle_yields_one_stationary_track() -> None:
    # 40 s at 30 fps; passing traffic hides the parked car for 3 s twice (longer than the 1 s buffer).
    hidden = set(range(400, 490)) | set(range(800, 890))
    parked = SimObject(1, (700, 600), (0, 0), (320, 200), plate=True, hidden=hidden)
    messages = track([parked], 1200)
    tracks = by_track(messages)
    assert len(tracks) == 1, [m.phase for m in messages if m.phase != "updated"]
    (msgs,) = tracks.values()
    assert_lifecycle(msgs)
    assert sum(m.phase == "started" for m in msgs) == 1
    # Not stationary at first; stationary after `stationary_after_s` (10 s = 300 frames) and from then on.
    assert not msgs[0].stationary
    assert all(m.stationary for m in msgs[320:])
    assert msgs[-1].stationary
    assert msgs[-1].direction is None  # it never moved


def test_moving_vehicle_is_not_stationary() -> None:
    slow = SimObject(1, (100, 600), (2, 0), (200, 140), plate=True)  # 60 px/s: a crawl, not parked
    msgs = next(iter(by_track(track([slow], 600)).values()))
    assert not any(m.stationary for m in msgs)


def test_zone_filters_plates() -> None:
    zone = {"id": "lane1", "points": [[0, 0], [960, 0], [960, 1080], [0, 1080]]}
    inside = SimObject(1, (300, 300), (0, 2), (260, 180), plate=True)
    outside = SimObject(2, (1500, 300), (0, 2), (260, 180), plate=True)
    # Enters the zone half way: announced only from then on.
    entering = SimObject(3, (1300, 800), (-15, 0), (260, 180), plate=True)
    messages = track([inside, outside, entering], 60, {"zones": [zone]})
    tracks = by_track(messages)
    assert len(tracks) == 2
    for msgs in tracks.values():
        assert_lifecycle(msgs)
        assert {m.zone_id for m in msgs} == {"lane1"}
        for m in msgs:
            assert m.plate_box is not None
            assert (m.plate_box.x1 + m.plate_box.x2) / 2 < 960
    first_frames = sorted(msgs[0].frame.seq for msgs in tracks.values() if msgs[0].frame)
    assert first_frames[0] <= 3  # `inside`: from its second frame
    assert first_frames[1] > 20  # `entering`: only once in the zone


def test_counting_line() -> None:
    line = {"start": [0, 540], "end": [1920, 540]}
    crossing_car = SimObject(1, (500, 200), (0, 15), (260, 180), plate=True)
    staying_car = SimObject(2, (1400, 200), (0, 3), (260, 180), plate=True)
    tracks = by_track(track([crossing_car, staying_car], 60, {"counting_line": line}))
    crossed = {
        msgs[-1].plate_box.x1 < 960: msgs[-1].crossed_line for msgs in tracks.values() if msgs[-1].plate_box
    }
    assert crossed == {True: True, False: False}


def test_lost_track_ends_after_buffer() -> None:
    car = SimObject(1, (900, 500), (0.2, 0), (260, 180), plate=True, last_frame=20)
    settings = TrackSettings.model_validate({"bytetrack": {"lost_track_buffer": 15}})
    messages = track([car], 60, settings=settings, end=False)
    (msgs,) = by_track(messages).values()
    assert_lifecycle(msgs)
    assert msgs[-1].end_reason == "lost"
    assert msgs[-1].captured_at_ns == msgs[-2].captured_at_ns  # the time it was last seen


@pytest.mark.parametrize(
    "bad",
    [
        {"bytetrack": {"low_score_thresh": 0.6, "high_score_thresh": 0.5}},
        {"bytetrack": {"new_track_thresh": 0.3}},
        {"cameras": {"c": {"zones": [{"id": "z", "points": [[0, 0], [1, 1]]}]}}},
        {"cameras": {"c": {"counting_line": {"start": [1, 1], "end": [1, 1]}}}},
        {"cameras": {"c": {"direction": {"vector": [0, 0]}}}},
        {"stationary_after_s": 0},
        {"bytetrack": {"typo": 1}},
    ],
)
def test_bad_settings_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="validation error"):
        TrackSettings.model_validate(bad)


def test_fast_small_plate_keeps_one_track() -> None:
    # A 24 px tall plate moving 18 px per frame (near the camera, or a camera at 10 fps): its box barely
    # overlaps the previous one. Buffered IoU (plate_match_expand) keeps one track; plain IoU fragments it.
    fast = SimObject(1, (500, 100), (0, 18), (300, 200), plate=True)
    tracks = by_track(track([fast], 50))
    assert len(tracks) == 1
    assert sum(m.phase == "updated" for m in next(iter(tracks.values()))) >= 40
    # With plain IoU the plate is never continued past its first frame: nothing for OCR to read.
    plain = track([fast], 50, settings=TrackSettings(plate_match_expand=0.0))
    assert sum(m.phase == "updated" for m in plain) < 5


def test_first_seen_is_the_first_detection_not_the_confirmation() -> None:
    late = SimObject(1, (400, 500), (5, 0), (260, 180), plate=True, first_frame=5)
    (msgs,) = by_track(track([late], 20)).values()
    frame_ns = round(1e9 / 30)
    assert msgs[0].frame is not None
    assert msgs[0].frame.seq == 7  # frame index 6: the second detection confirms the track
    assert msgs[0].captured_at_ns - msgs[0].first_seen_ns == frame_ns
    assert {m.first_seen_ns for m in msgs} == {msgs[0].first_seen_ns}
