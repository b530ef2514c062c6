"""The demo video: the labelled photos in order, each segment a moving view of its plate, cached by
parameters, decodable by the same FFmpeg the ingest service uses."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from alpr_shared.tools import demovideo
from alpr_shared.tools.demovideo import (
    READABLE,
    choose_photos,
    load_photo_labels,
    make_demo_video,
    plate_box_in_frame,
)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def test_video_has_the_photos_in_order_with_their_labels(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    video = make_demo_video(out, count=3, seconds_per_photo=1.0, fps=10, size=(320, 180))
    labels = {p.path.name: p.plate for p in load_photo_labels("us")}
    assert video.plates == [labels[name] for name in READABLE["us"][:3]]
    assert len(set(video.plates)) == 3
    frames = _decode(out)
    gap = round(demovideo.GAP_SECONDS * 10)
    assert len(frames) == video.frames == 3 * 10 + 2 * gap
    assert frames[0].shape == (180, 320, 3)
    assert video.segments[0] == (0.0, 1.0)
    starts = [s for s, _ in video.segments]
    assert starts == sorted(starts) and all(b - a == pytest.approx(1.0) for a, b in video.segments)
    # The gap between two cars is a dark, flat frame; a photo frame is not.
    assert frames[10 + gap // 2].std() < 3 < frames[5].std()
    # The view moves: the first and last frame of a segment differ.
    assert np.abs(frames[0].astype(int) - frames[9].astype(int)).mean() > 5


def test_the_plate_moves_and_grows_inside_the_frame() -> None:
    photo = choose_photos("us", 1)[0]
    import cv2  # noqa: PLC0415 - only this test reads the photo's size

    image = cv2.imread(str(photo.path))
    assert image is not None
    first = plate_box_in_frame(photo, image.shape[:2], (1280, 720), 30, 0)
    last = plate_box_in_frame(photo, image.shape[:2], (1280, 720), 30, 29)
    for box in (first, last):
        assert 0 <= box[0] < box[2] <= 1280 and 0 <= box[1] < box[3] <= 720
    assert abs(last[0] - first[0]) > 30, "the plate travels across the frame"
    assert (last[3] - last[1]) > (first[3] - first[1]), "the view zooms in"


def test_same_parameters_reuse_the_file_and_new_ones_regenerate(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    first = make_demo_video(out, count=2, seconds_per_photo=0.5, fps=8, size=(160, 96))
    stamp = out.stat().st_mtime_ns
    again = make_demo_video(out, count=2, seconds_per_photo=0.5, fps=8, size=(160, 96))
    assert out.stat().st_mtime_ns == stamp
    assert again == first
    other = make_demo_video(out, count=2, seconds_per_photo=0.5, fps=8, size=(160, 96), seed=3)
    assert out.stat().st_mtime_ns != stamp
    assert sorted(other.plates) != sorted(first.plates) or other.plates != first.plates
    # A truncated file (e.g. an interrupted copy) is not trusted.
    out.write_bytes(out.read_bytes()[:100])
    make_demo_video(out, count=2, seconds_per_photo=0.5, fps=8, size=(160, 96), seed=3)
    assert len(_decode(out)) == other.frames


def test_eu_set_and_clear_errors(tmp_path: Path) -> None:
    video = make_demo_video(
        tmp_path / "eu.mp4", dataset="eu", count=1, seconds_per_photo=0.3, fps=10, size=(128, 72)
    )
    assert video.plates and video.plates[0] in {p.plate for p in load_photo_labels("eu")}
    with pytest.raises(ValueError, match="unknown dataset"):
        make_demo_video(tmp_path / "x.mp4", dataset="mars")
    with pytest.raises(ValueError, match="only"):
        choose_photos("us", 10_000)
    with pytest.raises(ValueError, match="even"):
        make_demo_video(tmp_path / "x.mp4", size=(321, 180))
    assert not (tmp_path / "x.mp4").exists()


def test_cli_prints_the_plates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.mp4"
    code = demovideo.main([str(out), "--count", "2", "--seconds-per-photo", "0.3", "--size", "128x72"])
    assert code == 0
    text = capsys.readouterr().out
    for plate in choose_photos("us", 2):
        assert plate.plate in text
    assert demovideo.main([str(out), "--dataset", "us", "--count", "100000"]) == 2


def test_each_car_enters_away_from_where_the_previous_one_left(tmp_path: Path) -> None:
    """The pan of each photo runs in the direction that puts its plate's first position farthest from the
    previous plate's last one, so a tracker still holding the old track does not take the new plate."""
    import json  # noqa: PLC0415
    import math  # noqa: PLC0415

    import cv2  # noqa: PLC0415

    out = tmp_path / "demo.mp4"
    make_demo_video(out, count=6, seconds_per_photo=1.0, fps=10, size=(640, 360))
    reversed_pans = json.loads(out.with_name(out.name + ".json").read_text())["reversed_pans"]
    assert len(reversed_pans) == 6 and any(reversed_pans)
    previous = None
    for photo, reverse in zip(choose_photos("us", 6), reversed_pans, strict=True):
        image = cv2.imread(str(photo.path))
        assert image is not None
        shape = image.shape[:2]

        def centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
            return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2

        if previous is not None:
            chosen = centre(plate_box_in_frame(photo, shape, (640, 360), 10, 0, reverse=reverse))
            other = centre(plate_box_in_frame(photo, shape, (640, 360), 10, 0, reverse=not reverse))
            assert math.dist(chosen, previous) >= math.dist(other, previous)
        previous = centre(plate_box_in_frame(photo, shape, (640, 360), 10, 9, reverse=reverse))
