"""The view's drawing: a pure function that puts boxes, labels and a header on a copy of the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alpr_shared.view.draw import COLOURS, BoxOverlay, Overlay, annotate, box_label, encode_jpeg


def _count(img: np.ndarray, colour: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(img.astype(int) - np.array(colour)).sum(axis=2) < tol).sum())


def test_a_tracked_plate_is_framed_in_its_colour_with_its_label() -> None:
    frame = np.full((360, 640, 3), 90, dtype=np.uint8)
    frame.setflags(write=False)  # like a shared-memory view: must not be written
    box = BoxOverlay((200, 200, 320, 240), "plate", track_id=7, text="ABC123", confidence=0.93)
    out = annotate(frame, Overlay("gate", [box], fps_in=15.0, fps_detect=9.5), max_width=1280)
    assert out.shape == frame.shape and out is not frame
    assert (frame == 90).all(), "the input frame is untouched"
    magenta = COLOURS["plate"]
    # The box outline: every pixel of the left edge (below the label) is magenta.
    assert _count(out[215:240, 199:202], magenta) >= 25
    # Inside the box the picture is untouched.
    assert (out[225:235, 230:290] == 90).all()
    # The label sits above the box: a filled magenta bar with white text.
    label = out[160:200, 200:330]
    assert _count(label, magenta) > 500 and _count(label, (255, 255, 255)) > 20
    # The header bar across the top.
    assert _count(out[0:12, :], (32, 32, 32), tol=5) > 2000
    assert _count(out[100:150, :], magenta) == 0


def test_kinds_have_their_own_colours_and_boxes_outside_are_clipped() -> None:
    frame = np.zeros((200, 300, 3), dtype=np.uint8)
    overlay = Overlay(
        "cam",
        [
            BoxOverlay((10, 60, 120, 190), "vehicle", track_id=1),
            BoxOverlay((150, 100, 200, 120), "detection", score=0.81),
            BoxOverlay((250, 150, 400, 260), "plate", track_id=3),  # partly outside the frame
            BoxOverlay((500, 500, 600, 600), "plate", track_id=4),  # wholly outside: skipped
        ],
    )
    out = annotate(frame, overlay)
    assert _count(out, COLOURS["vehicle"]) > 100
    assert _count(out, COLOURS["detection"]) > 50
    assert _count(out[150:, 240:], COLOURS["plate"]) > 20


def test_large_frames_are_scaled_down_and_boxes_with_them() -> None:
    frame = np.full((1080, 1920, 3), 60, dtype=np.uint8)
    out = annotate(
        frame, Overlay("c", [BoxOverlay((960, 540, 1200, 620), "plate", track_id=1)]), max_width=960
    )
    assert out.shape == (540, 960, 3)
    # The box's left edge lands at x = 480 after halving.
    assert _count(out[285:305, 478:484], COLOURS["plate"]) >= 20


def test_grey_and_bgra_frames_are_drawn_in_colour() -> None:
    grey = np.full((100, 200), 128, dtype=np.uint8)
    assert annotate(grey, Overlay("g")).shape == (100, 200, 3)
    bgra = np.full((100, 200, 4), 128, dtype=np.uint8)
    assert annotate(bgra, Overlay("g")).shape == (100, 200, 3)


@pytest.mark.parametrize(
    ("box", "label"),
    [
        (BoxOverlay((0, 0, 1, 1), "plate", track_id=5, text="XYZ9", confidence=0.876), "#5 XYZ9 88%"),
        (
            BoxOverlay((0, 0, 1, 1), "plate", track_id=5, text="XYZ9", confidence=0.9, final=True),
            "#5 XYZ9 90% final",
        ),
        (BoxOverlay((0, 0, 1, 1), "plate", track_id=5), "#5 ..."),
        (BoxOverlay((0, 0, 1, 1), "detection", score=0.5), "plate 0.50"),
        (BoxOverlay((0, 0, 1, 1), "vehicle", track_id=2), "#2 vehicle"),
    ],
)
def test_labels(box: BoxOverlay, label: str) -> None:
    assert box_label(box) == label


def test_jpeg_round_trip_keeps_the_annotation_visible() -> None:
    frame = np.full((240, 320, 3), 100, dtype=np.uint8)
    out = annotate(frame, Overlay("c", [BoxOverlay((100, 100, 220, 140), "plate", track_id=1)]))
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(out, 80), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and _count(decoded, COLOURS["plate"], tol=90) > 100
