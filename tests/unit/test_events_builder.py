"""Event builder: one event per vehicle, revisions, deterministic ids, dedup windows and scopes,
enrichment, watchlist alerts, and state that survives a restart."""

from __future__ import annotations

import cv2
import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alpr_events.builder import BuilderConfig, CameraInfo, EventBuilder, OpenEventState, event_id_for
from alpr_events.plates import PlateFormats
from alpr_events.synthetic import make_read
from alpr_events.watchlist import Watchlist
from alpr_shared.schemas import CharCandidate, PlateRead, WatchlistEntry

S = 1_000_000_000
T0 = 1_700_000_000 * S
FORMATS = PlateFormats.load()


def cameras() -> dict[str, CameraInfo]:
    regions = FORMATS.resolve(["gb"])
    return {
        "gate-1": CameraInfo("gate-1", "hq", "Gate 1", regions, 51.5, -0.12, "northbound"),
        "gate-2": CameraInfo("gate-2", "hq", "Gate 2", regions),
        "depot": CameraInfo("depot", "depot", "Depot", regions),
    }


def builder(watchlist: Watchlist | None = None, **config) -> EventBuilder:
    return EventBuilder(BuilderConfig(**config), FORMATS, cameras(), watchlist or Watchlist())


def test_first_read_opens_an_event_with_a_deterministic_id() -> None:
    b = builder()
    out = b.process(make_read("gate-1", 7, "AB12 CDE", first_seen_ns=T0), T0)
    ev = out.event
    assert ev is not None and ev.revision == 1
    assert ev.event_id == event_id_for("hq", "gate-1", 7, T0)
    replayed = builder().process(make_read("gate-1", 7, "AB12CDE", first_seen_ns=T0), T0 + 5).event
    assert replayed is not None and replayed.event_id == ev.event_id
    assert ev.event_id != event_id_for("hq", "gate-1", 8, T0)
    assert (ev.plate, ev.plate_raw, ev.region, ev.format_valid) == ("AB12CDE", "AB12 CDE", "gb", True)


def test_enrichment_from_camera_config_and_track() -> None:
    ev = builder().process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0), T0).event
    assert ev is not None
    assert (ev.site_id, ev.camera_name, ev.latitude, ev.longitude, ev.camera_direction) == (
        "hq",
        "Gate 1",
        51.5,
        -0.12,
        "northbound",
    )
    assert ev.vehicle_class == "car" and ev.direction == "approaching"
    assert ev.vehicle_box is not None and ev.plate_box is not None
    assert ev.plate_jpeg is not None and ev.plate_jpeg.startswith(b"\xff\xd8")


def test_better_reads_revise_the_same_event_and_worse_ones_do_not() -> None:
    b = builder()
    first = b.process(make_read("gate-1", 1, "AB12CDF", first_seen_ns=T0, confidence=0.7), T0).event
    worse = b.process(
        make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, last_seen_ns=T0 + S, confidence=0.6), T0
    )
    better = b.process(
        make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, last_seen_ns=T0 + 2 * S, confidence=0.9), T0
    ).event
    assert first is not None and worse.event is None and better is not None
    assert better.event_id == first.event_id
    assert better.revision == 2
    assert better.plate == "AB12CDE" and better.last_seen_ns == T0 + 2 * S


def test_final_read_emits_only_when_something_changed() -> None:
    b = builder()
    b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.9), T0)
    b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, last_seen_ns=T0 + S, confidence=0.9), T0)
    final = b.process(
        make_read(
            "gate-1", 1, "AB12CDE", first_seen_ns=T0, last_seen_ns=T0 + S, confidence=0.9, final=True, reads=3
        ),
        T0,
    ).event
    assert final is not None and final.revision == 2 and final.final and final.reads == 3
    again = b.process(
        make_read(
            "gate-1", 1, "AB12CDE", first_seen_ns=T0, last_seen_ns=T0 + S, confidence=0.9, final=True, reads=3
        ),
        T0,
    )
    assert again.event is None  # a replayed final read changes nothing


def test_format_valid_read_beats_a_more_confident_invalid_one() -> None:
    b = builder(correction_max_changes=0)
    b.process(make_read("gate-1", 1, "AB12CD", first_seen_ns=T0, confidence=0.95), T0)
    ev = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.7), T0).event
    assert ev is not None and ev.format_valid and ev.plate == "AB12CDE"


def test_new_track_with_a_near_plate_merges_within_the_window() -> None:
    b = builder(dedup_window_s=300, dedup_max_distance=1)
    first = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.8), T0).event
    # The tracker lost the vehicle and found it again: new track id, one character misread.
    again = b.process(make_read("gate-1", 2, "AB12CDF", first_seen_ns=T0 + 60 * S, confidence=0.7), T0)
    assert first is not None
    assert again.merged and again.event is None  # not better: no new revision, no second event
    assert again.state is not None and again.state.event.event_id == first.event_id
    assert again.state.event.tracks == 2


def test_same_plate_after_the_window_is_a_new_event() -> None:
    b = builder(dedup_window_s=300)
    first = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0), T0).event
    later = b.process(make_read("gate-1", 2, "AB12CDE", first_seen_ns=T0 + 301 * S), T0).event
    assert first is not None and later is not None
    assert later.event_id != first.event_id and later.revision == 1


def test_far_plates_do_not_merge() -> None:
    b = builder(dedup_max_distance=1)
    first = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0), T0).event
    other = b.process(make_read("gate-1", 2, "AB12XYZ", first_seen_ns=T0 + S), T0).event
    assert first is not None and other is not None and other.event_id != first.event_id


def test_dedup_scope_camera_keeps_cameras_apart_and_site_merges_them() -> None:
    per_camera = builder(dedup_scope="camera")
    a = per_camera.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0), T0).event
    b = per_camera.process(make_read("gate-2", 1, "AB12CDE", first_seen_ns=T0 + S), T0).event
    assert a is not None and b is not None and a.event_id != b.event_id

    per_site = builder(dedup_scope="site")
    a = per_site.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0), T0).event
    merged = per_site.process(make_read("gate-2", 1, "AB12CDE", first_seen_ns=T0 + S), T0)
    other_site = per_site.process(make_read("depot", 1, "AB12CDE", first_seen_ns=T0 + S), T0).event
    assert a is not None and merged.merged and merged.event is None
    assert other_site is not None and other_site.event_id != a.event_id


def test_bad_reads_are_refused_with_a_reason() -> None:
    b = builder(min_confidence=0.3)
    assert b.process(make_read("nowhere", 1, "AB12CDE", first_seen_ns=T0), T0).dropped == "unknown_camera"
    assert b.process(make_read("gate-1", 1, "-- ·", first_seen_ns=T0), T0).dropped == "empty_text"
    assert (
        b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.1), T0).dropped
        == "low_confidence"
    )
    nan = msgspec.structs.replace(
        make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0), confidence=float("nan")
    )
    assert b.process(nan, T0).dropped == "malformed"
    backwards = make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, last_seen_ns=T0 - S)
    assert b.process(backwards, T0).dropped == "malformed"
    assert b.process(make_read("gate-1", 1, "A" * 40, first_seen_ns=T0), T0).dropped == "malformed"
    assert b.open_events() == 0


def test_too_short_reads_are_dropped_at_the_configured_length() -> None:
    strict = builder(min_plate_length=3)
    assert strict.process(make_read("gate-1", 1, "ON", first_seen_ns=T0), T0).dropped == "too_short"
    assert strict.process(make_read("gate-1", 2, "A1B", first_seen_ns=T0), T0).dropped is None
    lenient = builder(min_plate_length=1)
    assert lenient.process(make_read("gate-1", 1, "ON", first_seen_ns=T0), T0).dropped is None


def test_corrected_plate_keeps_the_raw_read() -> None:
    # No OCR alternatives: the 5→S guess rests on the confusables alone (ratio 0.5), allowed here.
    b = builder(correction_min_ratio=0.0)
    ev = b.process(make_read("gate-1", 1, "AB12CD5", first_seen_ns=T0, confidence=0.9), T0).event
    assert ev is not None
    assert (ev.plate, ev.plate_raw, ev.corrected) == ("AB12CDS", "AB12CD5", True)
    assert ev.confidence < 0.9


def test_a_correction_the_ocr_does_not_back_is_refused() -> None:
    """By default a format-only guess does not overrule a confident read (measured in ACCURACY.md)."""
    ev = builder().process(make_read("gate-1", 1, "AB12CD5", first_seen_ns=T0, confidence=0.9), T0).event
    assert ev is not None
    assert (ev.plate, ev.corrected, ev.format_valid) == ("AB12CD5", False, False)


def test_a_correction_the_ocr_backs_is_kept() -> None:
    alternatives = [[CharCandidate(c, 0.9)] for c in "AB12CD"] + [
        [CharCandidate("5", 0.5), CharCandidate("S", 0.45)]
    ]
    read = make_read("gate-1", 1, "AB12CD5", first_seen_ns=T0, confidence=0.9, alternatives=alternatives)
    ev = builder().process(read, T0).event
    assert ev is not None
    assert (ev.plate, ev.corrected) == ("AB12CDS", True)


def test_oversized_crops_are_recoded_or_left_out() -> None:
    noise = np.random.default_rng(1).integers(0, 255, (200, 600, 3), dtype=np.uint8)
    big = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    out = builder(plate_jpeg_max_bytes=20_000).process(
        make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, plate_jpeg=big), T0
    )
    assert out.event is not None and out.event.plate_jpeg is not None
    assert len(out.event.plate_jpeg) <= 20_000 and out.crops == ["plate_recoded"]
    out = builder(plate_jpeg_max_bytes=10).process(
        make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, plate_jpeg=big), T0
    )
    assert out.event is not None and out.event.plate_jpeg is None and out.crops == ["plate_dropped"]


def test_watchlist_alerts_once_per_event_and_entry() -> None:
    wl = Watchlist(
        [
            WatchlistEntry(entry_id="w1", plate="AB12 CDE", label="stolen"),
            WatchlistEntry(entry_id="w2", plate="AB12CDX", label="suspect", match="fuzzy", max_distance=1),
            WatchlistEntry(entry_id="w3", plate="ZZ99ZZZ", label="other"),
        ]
    )
    b = builder(wl)
    out = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.7), T0)
    assert out.event is not None and out.event.watchlist == ["stolen", "suspect"]
    assert {(a.entry_id, a.distance) for a in out.alerts} == {("w1", 0), ("w2", 1)}
    again = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.95), T0)
    assert again.event is not None and again.alerts == []
    assert again.event.watchlist == ["stolen", "suspect"]


def test_watchlist_runtime_updates_and_deletes_override_config() -> None:
    wl = Watchlist([WatchlistEntry(entry_id="w1", plate="AB12CDE", label="config")])
    wl.apply("w1", WatchlistEntry(entry_id="w1", plate="AB12CDE", label="runtime"))
    assert [h.entry.label for h in wl.hits("AB12CDE")] == ["runtime"]
    wl.apply("w1", None)  # tombstone
    assert wl.hits("AB12CDE") == []
    wl.apply("w2", WatchlistEntry(entry_id="w2", plate="XY", deleted=True))
    assert len(wl) == 0


def test_state_round_trip_continues_revisions_after_a_restart() -> None:
    b = builder()
    out = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.7), T0)
    assert out.state is not None
    blob = msgspec.msgpack.encode(out.state)
    restarted = builder()
    restarted.restore([msgspec.msgpack.decode(blob, type=OpenEventState)])
    replay = restarted.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.7), T0)
    assert replay.event is None  # replayed read: same event, nothing new
    better = restarted.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.9), T0).event
    assert better is not None and better.revision == 2 and better.event_id == out.state.event.event_id


def test_events_leave_the_window_and_are_reported_for_deletion() -> None:
    b = builder(dedup_window_s=10)
    first = b.process(make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0), T0).event
    out = b.process(make_read("gate-1", 2, "XY34ZZZ", first_seen_ns=T0 + 11 * S), T0)
    assert first is not None and out.evicted == [first.event_id]
    assert b.open_events() == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["gate-1", "gate-2"]),
            st.integers(0, 5),  # track
            st.sampled_from(["AB12CDE", "AB12CDF", "XY34ZZZ", "XY34ZZ2"]),
            st.floats(0.3, 1.0),
            st.integers(0, 600),  # seconds after T0
            st.booleans(),
        ),
        max_size=40,
    )
)
@settings(max_examples=150, deadline=None)
def test_property_one_event_per_track_and_revisions_strictly_increase(reads) -> None:
    b = builder(dedup_window_s=300)
    revisions: dict[str, int] = {}
    track_event: dict[tuple[str, int, int], str] = {}
    for camera, track, text, conf, sec, final in reads:
        first = T0 + sec * S
        read: PlateRead = make_read(camera, track, text, first_seen_ns=first, confidence=conf, final=final)
        out = b.process(read, T0)
        assert out.dropped is None and out.state is not None
        ev = out.event
        if ev is not None:
            assert ev.revision == revisions.get(ev.event_id, 0) + 1
            revisions[ev.event_id] = ev.revision
        # A track (camera, id) that is still open always maps to one event.
        key = (camera, track, 0)
        current = out.state.event.event_id
        if key in track_event and track_event[key] in b._open:
            assert track_event[key] == current
        track_event[key] = current


def test_replayed_reads_after_the_final_one_emit_nothing() -> None:
    b = builder()
    first, final = (
        make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, confidence=0.8),
        make_read("gate-1", 1, "AB12CDE", first_seen_ns=T0, last_seen_ns=T0 + S, confidence=0.9, final=True),
    )
    assert b.process(first, T0).event is not None
    assert b.process(final, T0).event is not None
    # The coordinator re-sends both after a crash: the track stays ended, nothing is emitted again.
    assert b.process(first, T0).event is None
    again = b.process(final, T0)
    assert again.event is None and again.state is not None and again.state.event.final
