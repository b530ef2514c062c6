"""Every message that crosses a process boundary, in one place.

Edge stages exchange these over local ZeroMQ (msgpack); the events service sends `PlateEvent` to Kafka.
Each message is a tagged `msgspec.Struct` carrying `schema_version`, so a receiver can tell "this is not
one of ours" (malformed bytes, unknown tag) from "this is ours but from another build" (version mismatch)
and say which one in its error.

This module owns the wire format and nothing else: no I/O, no sockets, no pixels. Frames never travel
inside a message; a `FrameRef` names the shared-memory slot that holds them (see `framestore`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar, overload

import msgspec

# Bump when a change is not backwards compatible (a field removed, renamed or its meaning changed).
# Adding a field with a default keeps the version: older readers ignore it, newer readers default it.
SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A message could not be decoded: malformed bytes, an unknown type, or a field of the wrong shape."""


class SchemaVersionError(SchemaError):
    """A well-formed message from a build that speaks another schema version."""

    def __init__(self, message_type: str, got: int, expected: int) -> None:
        super().__init__(
            f"{message_type} has schema_version {got}, this build speaks {expected}; "
            "run the same alpr version on every stage"
        )
        self.message_type = message_type
        self.got = got
        self.expected = expected


class _Message(msgspec.Struct, frozen=True, tag_field="type", kw_only=True, forbid_unknown_fields=False):
    schema_version: int = SCHEMA_VERSION


# --- frames -------------------------------------------------------------------------------------------


class FrameRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where one decoded frame lives: a slot of a camera's shared-memory ring.

    `epoch` identifies the writer instance that created the segment (a restarted writer gets a new one);
    `seq` is the frame's sequence number within that epoch. A reader must check both before and after it
    reads the pixels (see `framestore.FrameReader`).
    """

    segment: str
    epoch: int
    slot: int
    seq: int
    height: int
    width: int
    channels: int
    dtype: str = "uint8"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


class FrameReady(_Message, frozen=True, tag="frame"):
    """ingest → detect: a new frame was written for `camera_id`."""

    camera_id: str
    frame: FrameRef
    captured_at_ns: int  # wall clock (time.time_ns) when the frame was decoded
    published_at_ns: int  # monotonic clock (time.monotonic_ns) at publication, for handoff latency
    source_pts_s: float | None = None  # presentation time within a file source, when known


# --- detections and tracks ----------------------------------------------------------------------------

ObjectClass = Literal["plate", "car", "truck", "bus", "motorcycle"]


class Box(msgspec.Struct, frozen=True, array_like=True):
    """Axis-aligned box in frame pixels (x1, y1, x2, y2)."""

    x1: float
    y1: float
    x2: float
    y2: float


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    box: Box
    score: float
    label: ObjectClass


class FrameDetections(_Message, frozen=True, tag="detections"):
    """detect → track: everything found on one frame (possibly nothing)."""

    camera_id: str
    frame: FrameRef
    captured_at_ns: int
    detections: list[Detection]
    backend: str  # e.g. "onnxruntime-cpu", "tensorrt"
    inference_ms: float


TrackPhase = Literal["started", "updated", "ended"]
# lost: not re-found within the buffer; left_frame: predicted out of view; shutdown: track or camera stopped.
TrackEndReason = Literal["lost", "left_frame", "shutdown"]


class TrackMessage(_Message, frozen=True, tag="track"):
    """track → ocr and events: lifecycle of one plate track."""

    camera_id: str
    track_id: int
    phase: TrackPhase
    frame: FrameRef | None  # None on "ended": the track has no current frame
    captured_at_ns: int
    plate_box: Box | None
    plate_score: float
    vehicle_track_id: int | None = None
    vehicle_class: ObjectClass | None = None
    vehicle_box: Box | None = None
    direction: str | None = None
    stationary: bool = False
    crossed_line: bool = False
    # Added by the track service (#7); defaults keep older producers' messages valid.
    zone_id: str | None = None  # the zone the plate was last seen in (None: no zones configured)
    first_seen_ns: int = 0  # capture time of the plate track's first detection
    hits: int = 0  # frames on which the plate was detected so far
    end_reason: TrackEndReason | None = None  # "ended" only: lost, left_frame or shutdown


# --- OCR ----------------------------------------------------------------------------------------------


class OcrJob(_Message, frozen=True, tag="ocr_job"):
    """ocr coordinator → ocr worker: one plate crop to read. The crop is a small copy (the frame slot has
    been released by then), encoded as raw pixels."""

    job_id: str
    camera_id: str
    track_id: int
    crop: bytes
    crop_height: int
    crop_width: int
    crop_channels: int = 3
    attempt: int = 1


class CharCandidate(msgspec.Struct, frozen=True, array_like=True):
    char: str
    confidence: float


class OcrResult(_Message, frozen=True, tag="ocr_result"):
    """ocr worker → ocr coordinator: the text read from one crop, with per-character alternatives."""

    job_id: str
    camera_id: str
    track_id: int
    text: str
    confidence: float
    # One list per character position, best first.
    alternatives: list[list[CharCandidate]] = msgspec.field(default_factory=list)
    worker_id: str = ""
    latency_ms: float = 0.0


class OcrWorkerReady(_Message, frozen=True, tag="ocr_ready"):
    """ocr worker → ocr coordinator: "I am here and take `capacity` jobs at once" — sent on start and as a
    heartbeat; `capacity=0` says goodbye (a graceful stop). Credit-based load balancing: the coordinator
    sends a worker at most `capacity` unanswered jobs."""

    worker_id: str
    capacity: int = 1
    jobs_done: int = 0
    backend: str = ""


class PlateRead(_Message, frozen=True, tag="plate_read"):
    """ocr coordinator → events: the current best read of one plate track, with what events needs to
    build the event (track metadata, best-shot crop). Sent when a read improves and once more, with
    `final=True`, when the track ended; events never needs the track messages themselves."""

    camera_id: str
    track_id: int
    final: bool
    text: str
    confidence: float
    # One list per character position, best first: input to format-guided correction.
    alternatives: list[list[CharCandidate]] = msgspec.field(default_factory=list)
    reads: int = 1  # OCR reads of this track so far
    first_seen_ns: int = 0  # wall clock, UTC
    last_seen_ns: int = 0
    best_shot_ns: int = 0  # capture time of the crop the text came from
    plate_box: Box | None = None
    plate_jpeg: bytes | None = None  # small JPEG of the best-shot plate crop
    vehicle_track_id: int | None = None
    vehicle_class: ObjectClass | None = None
    vehicle_box: Box | None = None
    vehicle_jpeg: bytes | None = None  # size-capped JPEG of the vehicle crop, where configured
    direction: str | None = None
    stationary: bool = False
    crossed_line: bool = False


# --- events (the only messages that leave the edge) ---------------------------------------------------


class PlateEvent(_Message, frozen=True, tag="plate_event"):
    """events → Kafka (`alpr.plates.detected`) → persist. One per vehicle passage; a later, better read
    of the same passage re-sends it with the same `event_id` and a higher `revision`."""

    event_id: str
    revision: int
    camera_id: str
    site_id: str
    plate: str
    plate_raw: str
    region: str
    format_valid: bool
    confidence: float
    first_seen_ns: int
    last_seen_ns: int
    track_id: int
    direction: str | None = None
    vehicle_class: str | None = None
    plate_jpeg: bytes | None = None
    # Added by the events service (#9); defaults keep older producers' events valid.
    corrected: bool = False  # `plate` is a format-guided correction of the OCR text (`plate_raw`)
    final: bool = False  # the (last merged) track ended: no better read of this passage will come
    reads: int = 1  # OCR reads behind this event, over every merged track
    tracks: int = 1  # tracks merged into this event (re-acquired vehicle, or another camera of the site)
    best_shot_ns: int = 0  # capture time of the crop the plate text came from
    emitted_at_ns: int = 0  # wall clock when this revision was built
    camera_name: str = ""
    latitude: float | None = None
    longitude: float | None = None
    camera_direction: str | None = None  # the camera's configured heading / lane, e.g. "northbound"
    plate_box: Box | None = None
    vehicle_box: Box | None = None
    vehicle_jpeg: bytes | None = None  # size-capped JPEG of the vehicle crop
    crossed_line: bool = False
    watchlist: list[str] = msgspec.field(default_factory=list)  # labels of the watchlist entries it hit


# --- watchlist (query → Kafka alpr.watchlist → events; events → alpr.alerts) ---------------------------

WatchlistMatch = Literal["exact", "fuzzy"]


class WatchlistEntry(_Message, frozen=True, tag="watchlist_entry"):
    """One watched plate on the compacted `alpr.watchlist` topic (key = `entry_id`). The latest record of
    a key wins; `deleted=True` or a tombstone (null value) removes the entry."""

    entry_id: str
    plate: str
    label: str = "watchlist"
    match: WatchlistMatch = "exact"
    max_distance: int = 1  # fuzzy only: largest edit distance that still counts as a hit
    deleted: bool = False
    updated_at_ns: int = 0


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def watchlist_entry_from_row(row: Any) -> WatchlistEntry | None:
    """A row (an asyncpg Record or a mapping) of the `watchlist_entries` table (the watchlist's source of truth) as the entry the topic
    carries; None for a deleted one. The query service publishes these and events' database poller applies
    them: one mapping for both."""
    if row["deleted_at"] is not None:
        return None
    delta = row["updated_at"] - _UNIX_EPOCH
    return WatchlistEntry(
        entry_id=row["entry_id"],
        plate=row["plate"],
        label=row["label"],
        match=row["match"],
        max_distance=int(row["max_distance"]),
        updated_at_ns=(delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000,
    )


class WatchlistAlert(_Message, frozen=True, tag="watchlist_alert"):
    """events → Kafka `alpr.alerts` (key = event id) and webhooks: a plate event hit a watchlist entry.
    `alert_id` is derived from event and entry, so a replay re-sends the same alert."""

    alert_id: str
    event_id: str
    entry_id: str
    label: str
    watched_plate: str
    plate: str
    distance: int
    camera_id: str
    site_id: str
    seen_ns: int
    confidence: float
    camera_name: str = ""
    latitude: float | None = None
    longitude: float | None = None


Message = (
    FrameReady
    | FrameDetections
    | TrackMessage
    | OcrJob
    | OcrResult
    | OcrWorkerReady
    | PlateRead
    | WatchlistEntry
    | WatchlistAlert
    | PlateEvent
)

MESSAGE_TYPES: tuple[type[_Message], ...] = (
    FrameReady,
    FrameDetections,
    TrackMessage,
    OcrJob,
    OcrResult,
    OcrWorkerReady,
    PlateRead,
    WatchlistEntry,
    WatchlistAlert,
    PlateEvent,
)


class _VersionProbe(msgspec.Struct, forbid_unknown_fields=False):
    type: str = "?"
    schema_version: int = -1


T = TypeVar("T", bound=_Message)


Wire = Literal["msgpack", "json"]


class Codec(Generic[T]):
    """Encodes and decodes messages of the types a socket or topic carries.

    msgpack on the edge's ZeroMQ sockets; JSON (`wire="json"`) on Kafka, where other consumers and
    humans read the events. `decode` raises `SchemaError` (or its `SchemaVersionError`) with a message
    that says what was wrong; it never returns a half-valid object. Callers count and drop, never crash.
    """

    @overload
    def __init__(self: Codec[Message], *, wire: Wire = "msgpack") -> None: ...
    @overload
    def __init__(self, message_type: type[T], *, wire: Wire = "msgpack") -> None: ...
    def __init__(self, message_type: object = Message, *, wire: Wire = "msgpack") -> None:
        """`Codec()` speaks every message type; `Codec(FrameReady)` only that one."""
        self.wire = wire
        self._encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder
        self._decoder: msgspec.msgpack.Decoder[T] | msgspec.json.Decoder[T]
        self._probe: msgspec.msgpack.Decoder[_VersionProbe] | msgspec.json.Decoder[_VersionProbe]
        if wire == "json":
            self._encoder = msgspec.json.Encoder()
            self._decoder = msgspec.json.Decoder(message_type)
            self._probe = msgspec.json.Decoder(_VersionProbe)
        else:
            self._encoder = msgspec.msgpack.Encoder()
            self._decoder = msgspec.msgpack.Decoder(message_type)
            self._probe = msgspec.msgpack.Decoder(_VersionProbe)

    def encode(self, message: T) -> bytes:
        return self._encoder.encode(message)

    def decode(self, data: bytes | memoryview) -> T:
        # Check the version first, so a message from another build is reported as such and not as
        # whatever field happened to change shape between versions.
        try:
            probe = self._probe.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SchemaError(f"not a valid alpr message: {exc}") from exc
        if probe.schema_version != SCHEMA_VERSION:
            raise SchemaVersionError(probe.type, probe.schema_version, SCHEMA_VERSION)
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SchemaError(f"invalid {probe.type} message: {exc}") from exc
