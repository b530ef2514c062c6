"""Every message type survives a round trip; a message from another build or plain garbage is rejected
with an error that says which."""

from __future__ import annotations

import json

import msgspec
import pytest

from alpr_shared import schemas as s


def _frame_ref() -> s.FrameRef:
    return s.FrameRef(
        segment="alpr.default.cam1", epoch=99, slot=3, seq=1234, height=1080, width=1920, channels=3
    )


def _examples() -> list[s.Message]:
    box = s.Box(10, 20, 110, 60)
    return [
        s.FrameReady(
            camera_id="cam1", frame=_frame_ref(), captured_at_ns=1, published_at_ns=2, source_pts_s=0.04
        ),
        s.FrameDetections(
            camera_id="cam1",
            frame=_frame_ref(),
            captured_at_ns=1,
            detections=[
                s.Detection(box=box, score=0.9, label="plate"),
                s.Detection(box=box, score=0.5, label="car"),
            ],
            backend="onnxruntime-cpu",
            inference_ms=12.5,
        ),
        s.TrackMessage(
            camera_id="cam1",
            track_id=7,
            phase="updated",
            frame=_frame_ref(),
            captured_at_ns=5,
            plate_box=box,
            plate_score=0.8,
            vehicle_track_id=3,
            vehicle_class="truck",
            vehicle_box=box,
            direction="approaching",
        ),
        s.TrackMessage(
            camera_id="cam1",
            track_id=7,
            phase="ended",
            frame=None,
            captured_at_ns=9,
            plate_box=None,
            plate_score=0.0,
        ),
        s.TrackMessage(
            camera_id="cam1",
            track_id=8,
            phase="ended",
            frame=None,
            captured_at_ns=9,
            plate_box=box,
            plate_score=0.7,
            stationary=True,
            crossed_line=True,
            zone_id="gate",
            first_seen_ns=2,
            hits=12,
            end_reason="left_frame",
        ),
        s.OcrJob(job_id="j1", camera_id="cam1", track_id=7, crop=b"\x00" * 30, crop_height=2, crop_width=5),
        s.OcrResult(
            job_id="j1",
            camera_id="cam1",
            track_id=7,
            text="ABC123",
            confidence=0.93,
            alternatives=[[s.CharCandidate("A", 0.9), s.CharCandidate("4", 0.05)]],
        ),
        s.OcrWorkerReady(worker_id="w-1", capacity=1, jobs_done=4, backend="onnxruntime-cpu"),
        s.PlateRead(
            camera_id="cam1",
            track_id=7,
            final=True,
            text="ABC123",
            confidence=0.91,
            alternatives=[[s.CharCandidate("A", 0.9)]],
            reads=3,
            first_seen_ns=1,
            last_seen_ns=2,
            plate_box=box,
            plate_jpeg=b"\xff\xd8",
            vehicle_class="car",
        ),
        s.WatchlistEntry(entry_id="w1", plate="ABC123", label="stolen", match="fuzzy", max_distance=1),
        s.WatchlistAlert(
            alert_id="a1",
            event_id="e1",
            entry_id="w1",
            label="stolen",
            watched_plate="ABC123",
            plate="ABC128",
            distance=1,
            camera_id="cam1",
            site_id="hq",
            seen_ns=1,
            confidence=0.9,
        ),
        s.PlateEvent(
            event_id="e1",
            revision=2,
            camera_id="cam1",
            site_id="hq",
            plate="ABC123",
            plate_raw="ABC-123",
            region="us",
            format_valid=True,
            confidence=0.93,
            first_seen_ns=1,
            last_seen_ns=2,
            track_id=7,
            plate_jpeg=b"\xff\xd8",
        ),
    ]


@pytest.mark.parametrize("wire", ["msgpack", "json"])
@pytest.mark.parametrize("message", _examples(), ids=lambda m: type(m).__name__)
def test_round_trip(message: s.Message, wire: s.Wire) -> None:
    codec: s.Codec[s.Message] = s.Codec(wire=wire)
    assert codec.decode(codec.encode(message)) == message


def test_json_wire_is_readable_json() -> None:
    event = _examples()[-1]
    decoded = json.loads(s.Codec(wire="json").encode(event))
    assert decoded["type"] == "plate_event"
    assert decoded["schema_version"] == s.SCHEMA_VERSION
    assert decoded["plate"] == "ABC123"


def test_json_version_mismatch_is_rejected() -> None:
    with pytest.raises(s.SchemaVersionError, match="plate_event has schema_version 9"):
        s.Codec(s.PlateEvent, wire="json").decode(b'{"type": "plate_event", "schema_version": 9}')


def test_every_message_type_is_covered_by_the_examples() -> None:
    assert {type(m) for m in _examples()} == set(s.MESSAGE_TYPES)


def test_typed_codec_rejects_another_message_type() -> None:
    frames: s.Codec[s.FrameReady] = s.Codec(s.FrameReady)
    event = _examples()[-1]
    with pytest.raises(s.SchemaError, match="plate_event"):
        frames.decode(s.Codec().encode(event))


def test_version_mismatch_is_rejected_clearly() -> None:
    codec: s.Codec[s.Message] = s.Codec()
    message = _examples()[0]
    raw = msgspec.msgpack.decode(codec.encode(message))
    raw["schema_version"] = s.SCHEMA_VERSION + 1
    with pytest.raises(s.SchemaVersionError) as info:
        codec.decode(msgspec.msgpack.encode(raw))
    text = str(info.value)
    assert "frame" in text
    assert f"schema_version {s.SCHEMA_VERSION + 1}" in text
    assert f"speaks {s.SCHEMA_VERSION}" in text
    assert info.value.got == s.SCHEMA_VERSION + 1


def test_message_without_version_is_a_version_error() -> None:
    codec: s.Codec[s.Message] = s.Codec()
    with pytest.raises(s.SchemaVersionError, match="schema_version -1"):
        codec.decode(msgspec.msgpack.encode({"type": "frame", "camera_id": "x"}))


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"not msgpack at all", msgspec.msgpack.encode([1, 2, 3]), msgspec.msgpack.encode("text")],
)
def test_malformed_bytes_raise_schema_error(data: bytes) -> None:
    with pytest.raises(s.SchemaError, match="not a valid alpr message"):
        s.Codec().decode(data)


def test_wrong_field_type_names_the_field() -> None:
    codec: s.Codec[s.Message] = s.Codec()
    raw = msgspec.msgpack.decode(codec.encode(_examples()[0]))
    raw["frame"]["slot"] = "three"
    with pytest.raises(s.SchemaError, match=r"frame\.slot"):
        codec.decode(msgspec.msgpack.encode(raw))


def test_unknown_type_tag_is_rejected() -> None:
    raw = {"type": "telemetry", "schema_version": s.SCHEMA_VERSION}
    with pytest.raises(s.SchemaError, match="invalid telemetry message"):
        s.Codec().decode(msgspec.msgpack.encode(raw))


def test_newer_optional_field_is_ignored_by_older_reader() -> None:
    codec: s.Codec[s.Message] = s.Codec()
    raw = msgspec.msgpack.decode(codec.encode(_examples()[0]))
    raw["added_in_a_later_build"] = 42
    assert codec.decode(msgspec.msgpack.encode(raw)) == _examples()[0]
