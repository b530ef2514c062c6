"""Pure functions of the detect service against hand-computed cases: letterbox, rescale, IoU, NMS,
YOLO decoding and the canonical Detections type."""

from __future__ import annotations

import numpy as np
import pytest

from alpr_detect.detections import Detections
from alpr_detect.geometry import (
    LETTERBOX_FILL,
    Letterbox,
    iou_matrix,
    letterbox,
    letterbox_params,
    nms,
    rescale_boxes,
    xywh_to_xyxy,
)
from alpr_detect.yolo import decode_one
from alpr_shared.schemas import Box


def test_letterbox_params_landscape() -> None:
    # 1280x720 into 640x640: scale 0.5 -> 640x360, 140 px of padding above and below.
    lb = letterbox_params((720, 1280), (640, 640))
    assert lb.scale == 0.5
    assert (lb.pad_x, lb.pad_y) == (0.0, 140.0)


def test_letterbox_params_portrait_and_upscale() -> None:
    # 100 wide x 200 high into 640: scale 3.2 -> 320x640, 160 px each side.
    lb = letterbox_params((200, 100), (640, 640))
    assert lb.scale == pytest.approx(3.2)
    assert (lb.pad_x, lb.pad_y) == (160.0, 0.0)


def test_letterbox_params_rejects_empty() -> None:
    with pytest.raises(ValueError, match="positive"):
        letterbox_params((0, 10), (640, 640))


def test_letterbox_image_pads_with_grey_and_keeps_content() -> None:
    image = np.full((720, 1280, 3), 200, np.uint8)
    out, lb = letterbox(image, (640, 640))
    assert out.shape == (640, 640, 3)
    assert (lb.pad_x, lb.pad_y, lb.scale) == (0.0, 140.0, 0.5)
    assert (out[:140] == LETTERBOX_FILL).all()
    assert (out[500:] == LETTERBOX_FILL).all()
    assert (out[140:500] == 200).all()


def test_letterbox_writes_into_given_buffer() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = 255
    buf = np.zeros((64, 64, 3), np.uint8)
    out, lb = letterbox(image, (64, 64), out=buf)
    assert out is buf
    assert lb.scale == pytest.approx(0.32)
    assert lb.pad_y == 16.0  # 200x100 -> 64x32, 16 px above
    assert (buf[16:48, :30] == 255).all() and (buf[16:48, 34:] == 0).all()


def test_rescale_inverts_letterbox_and_clips() -> None:
    lb = Letterbox(scale=0.5, pad_x=0.0, pad_y=140.0, src_height=720, src_width=1280)
    boxes = np.array([[100, 190, 200, 240], [-10, 100, 700, 600]], np.float32)
    out = rescale_boxes(boxes, lb)
    np.testing.assert_allclose(out[0], [200, 100, 400, 200])
    # The second box reaches past the frame on every side: clipped to 1280x720.
    np.testing.assert_allclose(out[1], [0, 0, 1280, 720])


def test_letterbox_then_rescale_round_trip() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(50, 2000, 2))
        _, lb = letterbox(np.zeros((h, w, 3), np.uint8), (640, 640))
        frame_box = np.array([[w * 0.2, h * 0.3, w * 0.6, h * 0.7]], np.float32)
        in_net = frame_box * lb.scale + np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], np.float32)
        np.testing.assert_allclose(rescale_boxes(in_net, lb), frame_box, atol=0.05)


def test_xywh_to_xyxy() -> None:
    np.testing.assert_allclose(xywh_to_xyxy(np.array([[50, 40, 20, 10]], np.float32)), [[40, 35, 60, 45]])


def test_iou_hand_computed() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [3, 3, 3, 8]], np.float32)
    # overlap 5x10=50, union 150 -> 1/3; identical -> 1; disjoint -> 0; zero-area -> 0
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1 / 3, 1.0, 0.0, 0.0], atol=1e-6)


def test_nms_suppresses_overlaps_keeps_order() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(box0, box1) = 90/110 = 0.82 > 0.5 -> box1 gone; box3 vs box0 IoU 0.5 (not > 0.5) -> both stay.
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # At 0.45 box0 goes (IoU 0.5 with box3); box1 stays: its IoU with box3 is 45/105 = 0.43.
    assert nms(boxes, scores, 0.45).tolist() == [3, 1, 2]


def test_nms_per_class_and_max_detections() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 1, 0], np.int64)
    assert nms(boxes, scores, 0.5, class_ids=classes).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5, class_ids=classes, max_detections=1).tolist() == [0]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, scores[:2], 0.5)


def test_decode_one_thresholds_and_maps_classes() -> None:
    # 2 classes, 3 anchors: (cx, cy, w, h, score0, score1)
    raw = np.array(
        [
            [50, 52, 200],
            [50, 50, 100],
            [20, 20, 10],
            [10, 10, 10],
            [0.9, 0.85, 0.01],
            [0.1, 0.2, 0.6],
        ],
        np.float32,
    )
    boxes, scores, ids = decode_one(raw, conf_threshold=0.25, iou_threshold=0.45, max_detections=10)
    # anchors 0 and 1 overlap (IoU 0.67) -> only anchor 0 survives NMS; anchor 2 is class 1.
    np.testing.assert_allclose(boxes, [[40, 45, 60, 55], [195, 95, 205, 105]])
    np.testing.assert_allclose(scores, [0.9, 0.6])
    assert ids.tolist() == [0, 1]
    # Dropping class 0 (map -1) leaves only anchor 2, relabelled to output class 0.
    boxes, scores, ids = decode_one(
        raw, conf_threshold=0.25, iou_threshold=0.45, max_detections=10, class_map=np.array([-1, 0])
    )
    assert ids.tolist() == [0] and scores.tolist() == pytest.approx([0.6])
    with pytest.raises(ValueError, match="tensor"):
        decode_one(raw[:3], conf_threshold=0.25, iou_threshold=0.45, max_detections=10)


def test_detections_validate_and_convert() -> None:
    dets = Detections(
        np.array([[1.04, 2, 3, 4]], np.float32), np.array([0.87654], np.float32), np.array([0], np.int64)
    )
    assert len(dets) == 1
    msg = dets.to_messages()[0]
    assert msg.label == "plate" and msg.box == Box(1.0, 2.0, 3.0, 4.0) and msg.score == pytest.approx(0.8765)
    with pytest.raises(ValueError, match="disagree"):
        Detections(np.zeros((2, 4), np.float32), np.zeros(1, np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="outside labels"):
        Detections(np.zeros((1, 4), np.float32), np.zeros(1, np.float32), np.array([3], np.int64))


def test_detections_concat_relabels() -> None:
    plates = Detections(np.ones((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int64))
    cars = Detections(
        np.ones((2, 4), np.float32),
        np.ones(2, np.float32),
        np.array([1, 0], np.int64),
        labels=("car", "truck"),
    )
    both = Detections.concat([plates, cars])
    assert both.labels == ("plate", "car", "truck")
    assert [both.label_of(i) for i in range(3)] == ["plate", "truck", "car"]
