"""The service's pure parts: per-camera trackers, idle cameras, reload, id source, config checks."""

from __future__ import annotations

import itertools

import pytest

from alpr_shared.schemas import FrameDetections
from alpr_shared.settings import ConfigError, TrackSettings, load_settings
from alpr_track.service import ID_BLOCK_PER_SECOND, Tracking, check_cameras, clock_id_source
from alpr_track.synthetic import SimObject, simulate, to_message


def _frames(camera: str, n: int = 20) -> list[FrameDetections]:
    car = SimObject(1, (400, 500), (5, 0), (260, 180), plate=True)
    return [to_message(f, camera_id=camera) for f in simulate([car], n)]


def test_cameras_are_tracked_separately_and_idle_ones_end() -> None:
    ids = itertools.count(1)
    tracking = Tracking(TrackSettings(), lambda: next(ids))
    out = []
    for a, b in zip(_frames("a"), _frames("b"), strict=True):
        out += tracking.update(a, now=0.0) + tracking.update(b, now=5.0)
    assert {m.camera_id for m in out if m.phase == "started"} == {"a", "b"}
    assert tracking.end_idle(10.0, now=9.0) == []
    ended = tracking.end_idle(10.0, now=12.0)  # a: silent for 12 s, b: for 7 s
    assert [(m.camera_id, m.phase, m.end_reason) for m in ended] == [("a", "ended", "shutdown")]
    assert set(tracking.cameras) == {"b"}
    # Camera a comes back: a new tracker, a new track id.
    again = [m for f in _frames("a") for m in tracking.update(f, now=20.0)]
    assert again[0].phase == "started"
    assert again[0].track_id not in {m.track_id for m in out}
    final = tracking.end_all()
    assert sorted(m.camera_id for m in final) == ["a", "b"]
    assert not tracking.cameras


def test_reload_applies_zones_to_open_tracks() -> None:
    ids = itertools.count(1)
    tracking = Tracking(TrackSettings(), lambda: next(ids))
    frames = _frames("a", 40)
    before = [m for f in frames[:20] for m in tracking.update(f)]
    assert before
    far_away = {"zones": [{"id": "z", "points": [[1500, 0], [1900, 0], [1900, 100]]}]}
    tracking.reconfigure(TrackSettings.model_validate({"cameras": {"a": far_away}}))
    after = [m for f in frames[20:] for m in tracking.update(f)]
    assert after == []  # the plate is outside the only zone now; its track carries on unannounced
    ended = tracking.end_all()
    assert [m.track_id for m in ended] == [before[0].track_id]


def test_clock_id_source_does_not_repeat_across_restarts() -> None:
    first = clock_id_source(now_s=1_700_000_000)
    ids = [first() for _ in range(ID_BLOCK_PER_SECOND - 1)]
    restarted = clock_id_source(now_s=1_700_000_001)
    assert restarted() > ids[-1]
    assert all(0 < i < 2**31 for i in ids)
    assert len(set(ids)) == len(ids)


def test_track_cameras_must_name_configured_cameras() -> None:
    settings = load_settings(
        overrides={"cameras": [{"id": "gate", "source": "x.mp4"}], "track": {"cameras": {"gat": {}}}}
    )
    with pytest.raises(ConfigError, match=r"unknown camera.*gat.*configured: gate"):
        check_cameras(settings)
    check_cameras(
        load_settings(overrides={"track": {"cameras": {"gat": {}}}})
    )  # no cameras: ids from the wire
