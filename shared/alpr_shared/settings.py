"""Settings: one YAML file (cameras, endpoints, thresholds) plus `ALPR_*` environment overrides.

Built once, in a service's `main`, by `load_settings()`; nothing here reads a file or the environment at
import. Precedence, highest first: explicit overrides passed in code, environment variables
(`ALPR_KAFKA__BOOTSTRAP=host:9092`, nested keys joined by `__`), the YAML file, the defaults below.

Every field is validated; an unknown key (a typo) is an error, not a silent default. `ConfigError` lists
each bad key by its dotted path (`cameras.1.target_fps`) with what was wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_ENV_VAR = "ALPR_CONFIG"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key."""


def _check_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(
            "must be 1-63 characters of letters, digits, '_' or '-', starting with a letter or digit"
        )
    return value


Identifier = Annotated[str, AfterValidator(_check_id)]
Port = Annotated[int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionOfInterest(_Section):
    """A rectangle of the frame, in pixels, that the pipeline looks at (the rest is ignored)."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class CameraSettings(_Section):
    id: Identifier
    name: str = ""
    # rtsp://…, http(s)://… (MJPEG), a video file path, /dev/videoN, or a folder of images.
    source: str = Field(min_length=1)
    enabled: bool = True
    # Drop frames evenly down to this rate; None keeps the source's rate.
    target_fps: float | None = Field(default=None, gt=0, le=240)
    roi: RegionOfInterest | None = None
    # Expected plate regions for format-guided correction (e.g. ["us", "de"]); empty means all known.
    regions: list[str] = Field(default_factory=list)
    site_id: str = "default"
    # File sources: pace frames at the file's frame rate (False: as fast as the pipeline takes them).
    realtime: bool = True
    # File sources: start again from the beginning at the end of the file.
    loop: bool = False
    # RTSP: TCP survives NAT and packet loss (interleaved); UDP has less latency on a clean LAN.
    transport: Literal["tcp", "udp"] = "tcp"
    # Credentials for RTSP/HTTP sources, put into the URL only when connecting; never logged.
    username: str | None = None
    password: SecretStr | None = None
    # cpu: FFmpeg (PyAV; V4L2 through OpenCV). gstreamer: `gstreamer_preset` or `gstreamer_pipeline`.
    decoder: Literal["cpu", "gstreamer"] = "cpu"
    # Ready-made decode pipelines: jetson (nvv4l2decoder), nvidia (nvh264dec/nvh265dec), software (avdec).
    gstreamer_preset: Literal["jetson", "nvidia", "software"] | None = None
    # Custom decode pipeline up to raw video; `{location}` is replaced by the source (credentials included).
    gstreamer_pipeline: str | None = None
    # Stream codec, for the GStreamer presets (FFmpeg detects it itself).
    codec: Literal["h264", "h265"] = "h264"
    # FFmpeg decoder threads (0: one per core). Frame threading adds (threads - 1) frames of latency.
    decoder_threads: int = Field(default=0, ge=0, le=64)
    # No decoded frame for this long: the source counts as stalled and is reconnected.
    stall_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # Opening the source (DNS, TCP, RTSP DESCRIBE/SETUP) may take this long before it counts as failed.
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Reconnection: exponential backoff with full jitter between these bounds, forever.
    backoff_min_s: float = Field(default=0.5, gt=0, le=3600)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _decoder_is_complete(self) -> Self:
        if self.decoder == "gstreamer" and (self.gstreamer_preset is None) == (
            self.gstreamer_pipeline is None
        ):
            raise ValueError("decoder gstreamer needs exactly one of gstreamer_preset or gstreamer_pipeline")
        if self.decoder != "gstreamer" and (self.gstreamer_preset or self.gstreamer_pipeline):
            raise ValueError("gstreamer_preset/gstreamer_pipeline are set but decoder is not gstreamer")
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not exceed backoff_max_s")
        if self.password is not None and not self.username:
            raise ValueError("password is set without username")
        if self.username and "://" in self.source and "@" in self.source.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("credentials are given both in the source URL and as username/password")
        return self


class IngestSettings(_Section):
    """The ingest service as a whole (per-camera behaviour lives under `cameras:`)."""

    # A `camera_status` log line per camera this often (0: never); metrics are always live.
    status_interval_s: float = Field(default=30.0, ge=0)
    # The interpreter that has GStreamer's Python bindings (gi) for the gstreamer decoder; Debian's.
    gstreamer_python: Path = Path("/usr/bin/python3")


class FrameStoreSettings(_Section):
    # Distinguishes rings of separate deployments on one host (segment names are alpr.<namespace>.<camera>).
    namespace: Identifier = "default"
    # Slots per camera: at 30 fps, 16 slots give a reader ~0.5 s before a frame is overwritten.
    slots_per_camera: int = Field(default=16, ge=2, le=1024)
    # Largest frame a ring accepts; each slot reserves this much (1080p BGR = 6.2 MB).
    max_width: int = Field(default=1920, gt=0, le=8192)
    max_height: int = Field(default=1080, gt=0, le=8192)


class EndpointSettings(_Section):
    """ZeroMQ endpoints of the edge pipeline. A plain address uses the role's documented direction
    (docs/architecture.md); prefix `bind:` or `connect:` to override it (e.g. OCR workers on another host)."""

    frames: str = "ipc://{runtime_dir}/frames.sock"
    detections: str = "ipc://{runtime_dir}/detections.sock"
    tracks: str = "ipc://{runtime_dir}/tracks.sock"
    ocr_jobs: str = "ipc://{runtime_dir}/ocr-jobs.sock"
    plate_reads: str = "ipc://{runtime_dir}/plate-reads.sock"
    # Best-effort copies of detections, tracks and plate reads for a live viewer (`alpr view` binds a SUB,
    # detect/track/ocr connect a PUB that drops when nobody listens or the viewer is slow); "" = off.
    monitor: str = "ipc://{runtime_dir}/monitor.sock"
    # Slow-consumer policy: frames are live video (drop oldest); everything after detect is never dropped.
    frames_hwm: int = Field(default=8, ge=1)
    messages_hwm: int = Field(default=10_000, ge=1)


class KafkaSettings(_Section):
    bootstrap: str = "127.0.0.1:9092"
    topic: str = "alpr.plates.detected"
    watchlist_topic: str = "alpr.watchlist"
    # Production defaults: never lose an acknowledged event. Test brokers must not weaken these.
    acks: Literal["all", "1", "0"] = "all"
    enable_idempotence: bool = True
    compression: Literal["gzip", "snappy", "lz4", "zstd", "none"] = "gzip"
    client_id: str = "alpr"
    request_timeout_ms: int = Field(default=30_000, gt=0)
    # Watchlist hits (events → integrations); key = event id.
    alerts_topic: str = "alpr.alerts"
    # Producer batching: wait this long for more records per partition (throughput vs latency).
    linger_ms: int = Field(default=5, ge=0, le=10_000)
    max_batch_bytes: int = Field(default=262_144, gt=0)
    # Between sites the connection is TLS and/or SASL; PLAINTEXT only inside one trusted host/network.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None  # CA bundle that signed the brokers' certificates (None: system CAs)
    ssl_certfile: Path | None = None  # client certificate, for brokers that require mutual TLS
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True  # never disable in production: it is what stops a man in the middle
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    # SecretStr: shown as '**********' by `alpr config show`, repr() and logs.
    sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _idempotence_needs_all_acks(self) -> Self:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError(
                f"enable_idempotence requires acks 'all' (got {self.acks!r}); set both or neither"
            )
        return self

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        uses_sasl = self.security_protocol.startswith("SASL")
        if uses_sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        if not uses_sasl and (self.sasl_username or self.sasl_password is not None):
            raise ValueError("sasl_username/sasl_password are set but security_protocol does not use SASL")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS needs both)")
        return self


class DatabaseSettings(_Section):
    url: str = "postgresql://alpr@127.0.0.1:5432/alpr"
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=10, ge=1)
    command_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) must not exceed pool_max ({self.pool_max})")
        return self


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: human-readable console output in a terminal, JSON lines otherwise (containers, files).
    format: Literal["auto", "json", "console"] = "auto"


class EventsCameraSettings(_Section):
    """What an event says about the camera beyond `cameras:` (site, name and regions live there)."""

    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    # Which way the camera looks or which lane it covers, e.g. "northbound" or "gate-in".
    direction: str | None = None


class WatchlistEntrySettings(_Section):
    """A watched plate from the configuration; the query service adds more at run time (alpr.watchlist)."""

    id: Identifier
    plate: str = Field(min_length=1, max_length=16)
    label: str = Field(default="watchlist", max_length=200)
    match: Literal["exact", "fuzzy"] = "exact"
    # fuzzy only: largest edit distance (Levenshtein) that still counts as a hit.
    max_distance: int = Field(default=1, ge=0, le=3)


class WebhookSettings(_Section):
    """An HTTP endpoint that receives watchlist alerts as JSON, signed with HMAC-SHA256."""

    url: str = Field(pattern=r"^https?://")
    # HMAC-SHA256 key; the receiver recomputes X-Alpr-Signature with it. Never logged.
    secret: SecretStr
    # Only alerts whose watchlist label is listed (empty: every alert).
    labels: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    # Attempts per alert before it is counted as failed; backoff doubles from backoff_s up to 30 s.
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_s: float = Field(default=0.5, gt=0, le=60)


class EventsSettings(_Section):
    """The events service: plate reads → one event per vehicle passage → outbox → Kafka."""

    # SQLite outbox (WAL); survives restarts, so it must be on persistent storage, not /tmp.
    outbox_path: Path = Path("/var/lib/alpr/events-outbox.sqlite3")
    # Past this many bytes of queued records the oldest are dropped, counted and logged (broker outage).
    outbox_max_bytes: int = Field(default=1 << 30, ge=1 << 16)
    # full: a committed event survives power loss; normal: survives a process crash, faster.
    outbox_synchronous: Literal["full", "normal"] = "full"
    # Records per producer round trip (and the lookback that checks in-flight records after a failure).
    send_batch: int = Field(default=500, ge=1, le=10_000)
    # Dedup: a read of the same vehicle within this window merges into the open event.
    dedup_window_s: float = Field(default=300.0, gt=0, le=86_400)
    # camera: merge within one camera; site: across the cameras of one site_id.
    dedup_scope: Literal["camera", "site"] = "camera"
    # Largest edit distance between two plate texts that still counts as the same vehicle.
    dedup_max_distance: int = Field(default=1, ge=0, le=3)
    # A later read must beat the event's confidence by this much to cause a new revision.
    revision_min_gain: float = Field(default=0.02, ge=0, le=1)
    # Reads below this confidence are dropped (counted, reason="low_confidence").
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    # Reads shorter than this after normalisation are dropped (reason="too_short"): two characters are a
    # logo, a sticker or half a plate far more often than a real plate (OpenALPR's default minimum is 4).
    min_plate_length: int = Field(default=3, ge=1, le=16)
    # Regions tried when a camera lists none; empty means every region of the formats file.
    default_regions: list[str] = Field(default_factory=list)
    # Extra YAML of plate formats, merged over the built-in file (same layout as plate_formats.yaml).
    formats_file: Path | None = None
    # Format-guided correction: most characters changed, and the weight of a confusable that the OCR
    # did not offer as an alternative (relative to the character it replaces).
    correction_max_changes: int = Field(default=2, ge=0, le=8)
    confusable_weight: float = Field(default=0.5, gt=0, le=1)
    # A correction is kept only when its characters are at least this share as likely as the read's own
    # (joint OCR probability): a guess that only the formats back reads confident plates wrong (ACCURACY.md).
    correction_min_ratio: float = Field(default=0.6, ge=0, le=1)
    # JPEGs inside the event: larger crops are re-encoded smaller, then left out (counted).
    plate_jpeg_max_bytes: int = Field(default=16_384, ge=0)
    vehicle_jpeg_max_bytes: int = Field(default=65_536, ge=0)
    cameras: dict[str, EventsCameraSettings] = Field(default_factory=dict)
    watchlist: list[WatchlistEntrySettings] = Field(default_factory=list)
    # Where runtime watchlist changes (the API's, layered over `watchlist`) come from. kafka: the compacted
    # `kafka.watchlist_topic` (production; not followed with delivery local). database: poll the
    # `watchlist_entries` table at `database.url` (`alpr run` without a broker). none: `watchlist` only.
    watchlist_source: Literal["kafka", "database", "none"] = "kafka"
    # Older spelling of watchlist_source (false: none, true: kafka), still read so existing files load.
    watchlist_from_kafka: bool | None = None
    # watchlist_source database: how often the table is checked; a change reaches matching within this.
    watchlist_poll_s: float = Field(default=2.0, gt=0, le=3_600)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    # kafka: the drainer sends outbox records to `kafka.topic`. local: no broker; the records stay in the
    # outbox for a persist on this host (`persist.source: outbox`), as `alpr run` does by default.
    delivery: Literal["kafka", "local"] = "kafka"

    @model_validator(mode="before")
    @classmethod
    def _legacy_watchlist_flag(cls, data: Any) -> Any:
        """`watchlist_from_kafka` → `watchlist_source`; both given and disagreeing is an error."""
        if not isinstance(data, dict) or data.get("watchlist_from_kafka") is None:
            return data
        raw = data["watchlist_from_kafka"]
        # A bool from YAML or a string from the environment (the field's own validation rejects junk).
        legacy = raw if isinstance(raw, bool) else str(raw).strip().lower() in {"1", "true", "yes", "on"}
        implied = "kafka" if legacy else "none"
        given = data.get("watchlist_source")
        if given is not None and given != implied:
            raise ValueError(
                f"watchlist_from_kafka ({str(legacy).lower()}) contradicts watchlist_source ({given}); "
                "set watchlist_source only (watchlist_from_kafka is its older spelling)"
            )
        return {**data, "watchlist_source": implied}


class PersistSettings(_Section):
    """The persist service: Kafka `kafka.topic` → PostgreSQL (or TimescaleDB), one consumer group."""

    # Instances with the same group id share the topic's partitions; offsets are committed per group.
    group_id: str = Field(default="alpr-persist", min_length=1)
    # Undecodable or schema-violating records go here with the reason; the partition moves on.
    dlq_topic: str = Field(default="alpr.plates.dlq", min_length=1)
    # A batch is written when it holds this many records or is this old, whichever comes first.
    batch_size: int = Field(default=5_000, ge=1, le=100_000)
    batch_time_ms: int = Field(default=500, ge=1, le=60_000)
    # Plate events (and the hourly rollup) older than this are dropped, a whole day partition at a time.
    retention_days: int = Field(default=90, ge=1, le=36_500)
    # Crops are personal data and the bulk of the bytes: kept for a shorter time by default.
    image_retention_days: int = Field(default=30, ge=1, le=36_500)
    rollup_retention_days: int = Field(default=730, ge=1, le=36_500)
    # Day partitions are created this many days ahead, so a write never waits for DDL at midnight.
    partition_lead_days: int = Field(default=3, ge=1, le=60)
    # How often partitions are created ahead and old ones dropped (any one instance does it).
    maintenance_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    # auto: TimescaleDB when the extension is installed and preloaded, else native range partitions.
    timeseries: Literal["auto", "timescaledb", "partitioned"] = "auto"
    # Apply pending migrations at start (under an advisory lock, so concurrent instances are safe).
    migrate_on_start: bool = True
    # Database retries after a failure back off from the first delay, doubling up to the cap.
    retry_initial_s: float = Field(default=0.2, gt=0, le=60)
    retry_max_s: float = Field(default=5.0, gt=0, le=600)
    # TimescaleDB only: chunks older than this are compressed (revisions of an event come within minutes).
    compress_after_days: int = Field(default=7, ge=1, le=36_500)
    # kafka: consume `kafka.topic` (production). outbox: take the records straight from the events outbox
    # on this host (`events.delivery: local`), deleting them only after the database commit (`alpr run`).
    source: Literal["kafka", "outbox"] = "kafka"
    # The outbox read with source outbox; None: `events.outbox_path` of the same configuration.
    outbox_path: Path | None = None
    # source outbox: how often an idle outbox is looked at for new records.
    outbox_poll_s: float = Field(default=0.2, gt=0, le=60)

    @model_validator(mode="after")
    def _retry_bounds(self) -> Self:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError(
                f"retry_initial_s ({self.retry_initial_s}) must not exceed retry_max_s ({self.retry_max_s})"
            )
        return self


class ByteTrackSettings(_Section):
    """ByteTrack's parameters (defaults: the paper's MOT17 values, which suit 10-30 fps road video)."""

    # Detections scoring at least this take part in the first association and may start tracks.
    high_score_thresh: float = Field(default=0.5, gt=0, le=1)
    # Below this a detection is noise; between the two it can only continue a track (second association).
    low_score_thresh: float = Field(default=0.1, ge=0, le=1)
    # An unclaimed detection must score this much to open a track: stops flickering false positives.
    # 0.5, not the paper's 0.6 (high + 0.1, for people): the plate detector scores small plates lower,
    # and at 0.6 a plate scoring 0.55 on every frame was never read (ACCURACY.md: +2 us, +1 eu photos).
    new_track_thresh: float = Field(default=0.5, gt=0, le=1)
    # Least IoU (times the score, with fuse_score) for a high-score box to continue a track.
    match_iou: float = Field(default=0.2, gt=0, lt=1)
    # Least IoU for a low-score box to continue a track: stricter, as these boxes are less certain.
    low_match_iou: float = Field(default=0.5, gt=0, lt=1)
    # Least IoU for a one-frame-old track to be confirmed by its second detection.
    confirm_match_iou: float = Field(default=0.3, gt=0, lt=1)
    # Frames a lost track is predicted and waits to be re-found (occlusion): 1 s at 30 fps.
    lost_track_buffer: int = Field(default=30, ge=1, le=100_000)
    # ... and at most this long by capture time (0 = frames only): keeps the buffer 1 s when detect
    # processes fewer frames than the camera sends (a busy CPU), instead of stretching it to many seconds.
    lost_track_seconds: float = Field(default=1.0, ge=0, le=3600)
    # Weigh IoU by detection score in the first association: prefers confident boxes in crowds.
    fuse_score: bool = True

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Self:
        if self.low_score_thresh >= self.high_score_thresh:
            raise ValueError(
                f"low_score_thresh ({self.low_score_thresh}) must be below high_score_thresh "
                f"({self.high_score_thresh})"
            )
        if self.new_track_thresh < self.high_score_thresh:
            raise ValueError(
                "new_track_thresh must be at least high_score_thresh (only high boxes start tracks)"
            )
        return self


class TrackZoneSettings(_Section):
    """A polygon of the frame (pixels); plates are read only while their centre is inside a zone."""

    id: Identifier
    points: list[tuple[float, float]] = Field(min_length=3)


class CountingLineSettings(_Section):
    """A segment of the frame (pixels); a track whose centre crosses it gets `crossed_line`."""

    start: tuple[float, float]
    end: tuple[float, float]

    @model_validator(mode="after")
    def _not_a_point(self) -> Self:
        if self.start == self.end:
            raise ValueError("counting_line start and end must differ")
        return self


class TrackDirectionSettings(_Section):
    """How motion in the image becomes a direction label."""

    # Image-plane travel (dx, dy) called `forward`; (0, 1) = down the image, towards a camera that
    # looks at oncoming traffic from above.
    vector: tuple[float, float] = (0.0, 1.0)
    forward: str = Field(default="approaching", min_length=1, max_length=64)
    backward: str = Field(default="leaving", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _vector_not_zero(self) -> Self:
        if self.vector == (0.0, 0.0):
            raise ValueError("direction vector must not be (0, 0)")
        return self


class TrackCameraSettings(_Section):
    """Per-camera tracking options (key: the camera id under `cameras:`)."""

    # Empty: the whole frame. Otherwise plates outside every zone are tracked but not sent to OCR.
    zones: list[TrackZoneSettings] = Field(default_factory=list)
    counting_line: CountingLineSettings | None = None
    # None: raw labels from the dominant motion axis (up/down/left/right).
    direction: TrackDirectionSettings | None = None
    # Replaces track.bytetrack for this camera (e.g. a low-fps camera needs a shorter buffer).
    bytetrack: ByteTrackSettings | None = None


class TrackSettings(_Section):
    """The track service: ByteTrack per camera for vehicles and plates, plates linked to vehicles."""

    bytetrack: ByteTrackSettings = Field(default_factory=ByteTrackSettings)
    # Buffered IoU: for matching, boxes grow by this share of their size on each side. Plates are small
    # and move many times their own height between frames; vehicles are large, plain IoU suits them.
    plate_match_expand: float = Field(default=1.0, ge=0, le=5)
    vehicle_match_expand: float = Field(default=0.0, ge=0, le=5)
    # Share of a plate box that must lie inside a vehicle box for the plate to belong to that vehicle.
    plate_in_vehicle_min: float = Field(default=0.8, gt=0, le=1)
    # Travel (fraction of the frame diagonal) before a direction is reported: ignores detector jitter.
    direction_min_travel: float = Field(default=0.03, gt=0, le=1)
    # A track whose centre stays within this many of its own box heights of one spot ...
    stationary_radius: float = Field(default=0.5, gt=0, le=10)
    # ... for this long is flagged stationary (a parked vehicle: events must not re-report it).
    stationary_after_s: float = Field(default=10.0, gt=0, le=86_400)
    # Frames a lost stationary track waits (a parked vehicle hidden by passing traffic): 5 min at 30 fps.
    stationary_lost_buffer: int = Field(default=9_000, ge=1, le=10_000_000)
    # A camera without detections for this long has its tracks ended (detect stopped or camera gone).
    camera_idle_timeout_s: float = Field(default=10.0, gt=0, le=86_400)
    # How long to wait for the OCR coordinator to take a message before failing (it never drops).
    send_timeout_s: float = Field(default=30.0, gt=0, le=3_600)
    cameras: dict[str, TrackCameraSettings] = Field(default_factory=dict)


class DetectMotionSettings(_Section):
    """Per-camera motion gate of the detect service: skip inference on frames where nothing moved."""

    # Off by default: it saves work on static scenes but can cost recall (measured in BENCHMARKS.md).
    enabled: bool = False
    # Frames are compared as grey thumbnails this wide: cheap, and blind to sensor noise.
    thumbnail_width: int = Field(default=160, ge=16, le=1920)
    # A thumbnail pixel counts as changed when its grey level moves by more than this (0-255).
    pixel_threshold: int = Field(default=18, ge=1, le=255)
    # A frame "moved" when at least this fraction of thumbnail pixels changed.
    min_changed_fraction: float = Field(default=0.002, gt=0, le=1)
    # A frame is detected anyway after this long without one, so parked vehicles are still seen.
    forced_interval_s: float = Field(default=2.0, gt=0, le=3_600)


class DetectSettings(_Section):
    """The detect service: plate (and optional vehicle) detectors, batched across cameras."""

    # onnxruntime (CPU by default; CUDA/TensorRT execution providers when present) or native tensorrt.
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    # ONNX Runtime execution providers in order of preference; [auto] = TensorRT, CUDA, CPU as present.
    providers: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    # Where `alpr models` keeps models; None: $ALPR_MODELS_DIR, else $XDG_CACHE_HOME/alpr/models or ~/.cache/alpr/models.
    models_dir: Path | None = None
    # Manifest name of the plate detector (`alpr models list`).
    plate_model: str = Field(default="plate-yolov8n", min_length=1)
    # Manifest name of a COCO vehicle detector; None: plates only, vehicle class unknown (none ships offline).
    vehicle_model: str | None = None
    # Network input side in pixels: 960 finds the small plates of 720p scenes that 640 misses (2.3x the work).
    input_size: int = Field(default=960, ge=64, le=4096, multiple_of=32)
    # Boxes scoring below this are dropped before NMS; 0.1 keeps faint plates (ByteTrack's low band).
    conf_threshold: float = Field(default=0.1, gt=0, lt=1)
    # NMS suppresses a box overlapping a better one of its class by more than this IoU.
    iou_threshold: float = Field(default=0.45, gt=0, lt=1)
    max_detections: int = Field(default=50, ge=1, le=1000)
    # Box refinement: the plate model's boxes are loose (median IoU 0.63-0.66 with the labels);
    # shrink = measured calibration, second-pass = re-detect on an upscaled crop, none = raw boxes.
    refine: Literal["none", "shrink", "second-pass"] = "second-pass"
    # Width and height factors around the box centre, applied last (measured on the OpenALPR sets).
    refine_width: float = Field(default=0.85, gt=0, le=2)
    refine_height: float = Field(default=0.75, gt=0, le=2)
    # second-pass: input side of the crop detector, and the crop's side in multiples of the box's.
    refine_crop_size: int = Field(default=320, ge=64, le=1280, multiple_of=32)
    refine_context: float = Field(default=1.6, ge=1, le=8)
    # Frames per inference call, gathered across cameras; a batch leaves when full or at the deadline.
    batch_size: int = Field(default=4, ge=1, le=64)
    batch_deadline_ms: float = Field(default=15.0, ge=0, le=10_000)
    # Frames waiting per camera; beyond it the oldest waiting frame is dropped (counted per camera).
    max_pending_per_camera: int = Field(default=2, ge=1, le=64)
    # ONNX Runtime threads inside one operator (0: half the cores, at least 1; detect shares the box with
    # the other stages) and across operators.
    intra_op_threads: int = Field(default=0, ge=0, le=256)
    inter_op_threads: int = Field(default=1, ge=0, le=256)
    # How long to wait for track to accept a message before failing (detections are never dropped).
    send_timeout_s: float = Field(default=30.0, gt=0, le=3_600)
    motion: DetectMotionSettings = Field(default_factory=DetectMotionSettings)


class OcrShotSettings(_Section):
    """Best-shot scoring of the OCR coordinator: which crop of a plate track is worth reading."""

    # A plate this many pixels high scores full marks for size; PP-OCRv4 reads at 48 px, so more adds little.
    full_height_px: float = Field(default=40.0, gt=0, le=1000)
    # Below this height a crop is not worth reading at all (characters are a few pixels wide).
    min_height_px: float = Field(default=10.0, ge=1, le=1000)
    # Variance of the Laplacian (crop scaled to 32 px high, lightly blurred) at which a crop counts as
    # fully sharp; motion and focus blur lower it (1500: crisp plates of plate-crops-us reach ~900-2000).
    full_sharpness: float = Field(default=1500.0, gt=0)
    # Weights of size, sharpness and detector confidence in the score (they are normalised to sum 1).
    weight_height: float = Field(default=0.45, ge=0, le=1)
    weight_sharpness: float = Field(default=0.35, ge=0, le=1)
    weight_confidence: float = Field(default=0.2, ge=0, le=1)
    # A box within this many pixels of the frame edge is probably cut: its score is scaled down.
    edge_margin_px: float = Field(default=2.0, ge=0, le=100)
    edge_penalty: float = Field(default=0.5, ge=0, le=1)
    # Plates are wider than high; a box outside this width/height range is skewed or not a whole plate.
    min_aspect: float = Field(default=1.0, gt=0, le=20)
    max_aspect: float = Field(default=6.0, gt=0, le=50)
    # Margin added around the plate box, as a share of its height on each side, when the crop is copied.
    crop_margin: float = Field(default=0.08, ge=0, le=1)
    # Best crops kept per track (copies, so the frame slot can be released); the best is the JPEG.
    keep_shots: int = Field(default=3, ge=1, le=32)


class OcrThrottleSettings(_Section):
    """When a plate track is read: reading every frame wastes 10-30x the work of reading best shots."""

    # A track is read at most this many times while it lives, plus once more when it ends.
    max_reads: int = Field(default=4, ge=1, le=100)
    # A new shot triggers a read if its score beats the last read's by this factor ("clearly better"); a
    # shot's score moves a few % from frame to frame with noise, so a smaller factor spends reads on noise.
    improve_ratio: float = Field(default=1.1, ge=1, le=10)
    # ... or if it is no worse and came this many frames after the last shot read: a different crop of an
    # equally good view has independent errors, which the vote cancels (late shots of a plate score alike).
    reread_gap_frames: int = Field(default=10, ge=1, le=100_000)
    # Shots scoring below this are kept for the JPEG but never read on their own.
    min_score: float = Field(default=0.35, ge=0, le=1)
    # Shots gathered before the first (interim) read: early frames of an approaching plate are the worst.
    frames_before_first_read: int = Field(default=10, ge=1, le=1000)
    # Stop reading once this many reads agree on the text and the voted confidence is at least ...
    stable_reads: int = Field(default=3, ge=1, le=100)  # 2 settled on wrong edge characters (bench)
    confident: float = Field(default=0.9, ge=0, le=1)
    # A stationary (parked) vehicle sends a shot every frame: consider at most one per this interval.
    stationary_interval_s: float = Field(default=5.0, ge=0, le=86_400)
    # Tracks whose `ended` never comes (track restarted) are forgotten after this long without a message.
    idle_track_timeout_s: float = Field(default=120.0, gt=0, le=86_400)


class OcrRecognizerSettings(_Section):
    """The OCR workers' recogniser: the project's trained CRNN (`plate-crnn`), PP-OCRv4 recognition
    (`ppocr-v4`, inside the rapidocr_onnxruntime wheel), or both fused (`ensemble`); all ONNX Runtime."""

    # Which recogniser reads the crops (the choice and its measurements: docs/architecture.md, OCR;
    # ACCURACY.md). `ensemble` reads 5-6 points more plates exactly than either model alone, for ~3 ms.
    backend: Literal["ensemble", "plate-crnn", "ppocr-v4"] = "ensemble"
    # plate-crnn: crops narrower than this width/height are also read as two stacked rows (US plates ≥ 1.7).
    stacked_max_aspect: float = Field(default=1.8, gt=0, le=10)
    # plate-crnn: edge pixels repeated around the crop (share of its width): keeps edge characters.
    edge_pad: float = Field(default=0.06, ge=0, le=0.5)
    # ONNX Runtime threads per worker process; one per worker is right when workers fill the cores.
    intra_op_threads: int = Field(default=1, ge=0, le=256)
    # Alternatives per character position, for events' format-guided correction.
    top_k: int = Field(default=3, ge=1, le=10)
    # CLAHE contrast normalisation as a second strategy when the first read is weak.
    contrast: bool = True
    # Below this mean character confidence, a read is weak: the other strategies are tried.
    weak_confidence: float = Field(default=0.95, ge=0, le=1)
    # The second scale for weak reads (horizontal stretch of the network input).
    second_scale: float = Field(default=1.5, gt=0, le=4)
    # Crops narrower than this width/height are read as two rows (stacked plates), row by row.
    two_row_aspect: float = Field(default=1.3, gt=0, le=10)
    # Horizontal stretch of the network input: more CTC steps keep doubled letters (1.25: +6 points).
    width_stretch: float = Field(default=1.25, gt=0, le=4)
    # Before recognition, level the crop's row of characters and cut away the text above and below it
    # (state names, slogans); measured with `alpr eval` in ACCURACY.md. Margin: share of character height.
    rectify: bool = True
    rectify_margin: float = Field(default=0.3, ge=0, le=2)


class OcrSettings(_Section):
    """The OCR coordinator (best shots, throttling, voting, job distribution) and its workers."""

    shots: OcrShotSettings = Field(default_factory=OcrShotSettings)
    throttle: OcrThrottleSettings = Field(default_factory=OcrThrottleSettings)
    recognizer: OcrRecognizerSettings = Field(default_factory=OcrRecognizerSettings)
    # A job a worker did not answer within this long is sent to another worker (dead or stuck worker).
    job_timeout_s: float = Field(default=2.0, gt=0, le=600)
    # Attempts per job before it is given up (counted; the track keeps its other reads).
    max_attempts: int = Field(default=3, ge=1, le=100)
    # Jobs waiting for a free worker; beyond it the oldest waiting job is dropped (counted).
    max_queue: int = Field(default=1_000, ge=1, le=1_000_000)
    # Workers announce their free capacity this often; one silent for `worker_expiry_s` is forgotten.
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    worker_expiry_s: float = Field(default=5.0, gt=0, le=3_600)
    # Jobs a worker takes at once (1: the coordinator always knows who is idle).
    worker_capacity: int = Field(default=1, ge=1, le=64)
    # JPEG quality and longest side of the best-shot plate crop sent with each PlateRead.
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    jpeg_max_side: int = Field(default=320, ge=16, le=4096)
    # How long to wait for events to take a PlateRead before failing (reads are never dropped).
    send_timeout_s: float = Field(default=30.0, gt=0, le=3_600)


class QuerySettings(_Section):
    """The query service: the REST API over the plate store (Litestar under uvicorn, one process)."""

    # Where the API listens; 0.0.0.0 exposes it beyond this host (put TLS termination in front).
    host: str = "127.0.0.1"
    port: Port = 8080
    # Browser origins allowed to call the API (CORS); empty: none, ["*"]: any (the API key still applies).
    cors_origins: list[str] = Field(default_factory=list)
    # Per API key, per process: sustained requests per second and the burst above it (token bucket); 0: off.
    rate_limit_per_s: float = Field(default=50.0, ge=0, le=1_000_000)
    rate_limit_burst: int = Field(default=100, ge=1, le=1_000_000)
    # Largest request body (a watchlist entry is a few hundred bytes); larger requests get 413.
    max_body_bytes: int = Field(default=65_536, ge=1_024, le=64 << 20)
    # Database connections of this process; a request holds one only for the length of its query.
    pool_size: int = Field(default=10, ge=1, le=1_000)
    # One API query may run this long; a slower one is cancelled and answered with 503, not left running.
    statement_timeout_s: float = Field(default=10.0, gt=0, le=3_600)
    # Largest page a client may ask for (`limit`): bounds the memory and time of one request.
    max_page_size: int = Field(default=500, ge=1, le=10_000)
    # A validated API key is trusted this long before it is looked up again (revocation bites within it).
    key_cache_s: float = Field(default=10.0, ge=0, le=3_600)
    # Publish watchlist changes to kafka.watchlist_topic for the edge; off: stored only (embedded, no broker).
    watchlist_publish: bool = True
    # A change request waits this long for the broker; then it answers "pending" and a retry loop sends it.
    publish_timeout_s: float = Field(default=5.0, gt=0, le=600)
    # How often changes not yet acknowledged by the broker are sent again.
    republish_interval_s: float = Field(default=10.0, gt=0, le=86_400)
    # Fuzzy plate search: pg_trgm's index when the server has it (auto), or a bounded scan scored in Python.
    fuzzy: Literal["auto", "trigram", "scan"] = "auto"
    # The scan scores at most this many of the newest events that pass the other filters.
    fuzzy_scan_limit: int = Field(default=50_000, ge=100, le=10_000_000)
    # One log line per request (method, route, status, duration; never headers, so never a key).
    access_log: bool = False


class ViewSettings(_Section):
    """`alpr view`: the live annotated view (an HTML page with one MJPEG stream per camera)."""

    # Localhost by default: the page shows camera pictures and plates (personal data) without a login.
    host: str = "127.0.0.1"
    port: Port = 8090
    # Annotated frames are JPEG-encoded at most this often per camera: encoding competes with inference.
    max_fps: float = Field(default=15.0, gt=0, le=120)
    # Frames wider than this are scaled down before drawing and encoding (a browser tile, not evidence).
    max_width: int = Field(default=1280, ge=160, le=7680)
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    # A frame is drawn this long after its detections arrived, so that the track and read of the same
    # frame (a few ms behind on the same host) are on it too.
    render_delay_s: float = Field(default=0.08, ge=0, le=2)
    # A plate read stays on its track's box this long after the track was last seen (reads lag frames).
    read_hold_s: float = Field(default=3.0, ge=0, le=600)
    # With no detections for this long, a camera's raw frames are shown (detect not running or behind).
    raw_after_s: float = Field(default=1.0, gt=0, le=60)


class ServiceSettings(_Section):
    """What every service has: where it serves /metrics and /health, and how long it may drain."""

    metrics_host: str = "127.0.0.1"
    metrics_port: Port
    # On SIGTERM, in-flight work gets this long to finish before the service is cancelled.
    shutdown_timeout_s: float = Field(default=10.0, gt=0)


DEFAULT_METRICS_PORTS: dict[str, int] = {
    "ingest": 9101,
    "detect": 9102,
    "track": 9103,
    "ocr": 9104,
    "ocr_worker": 9105,
    "events": 9106,
    "persist": 9107,
    "query": 9108,
}


def _service(name: str) -> Any:
    return Field(default_factory=lambda: ServiceSettings(metrics_port=DEFAULT_METRICS_PORTS[name]))


class ServicesSettings(_Section):
    ingest: ServiceSettings = _service("ingest")
    detect: ServiceSettings = _service("detect")
    track: ServiceSettings = _service("track")
    ocr: ServiceSettings = _service("ocr")
    ocr_worker: ServiceSettings = _service("ocr_worker")
    events: ServiceSettings = _service("events")
    persist: ServiceSettings = _service("persist")
    query: ServiceSettings = _service("query")

    @model_validator(mode="before")
    @classmethod
    def _default_ports(cls, data: Any) -> Any:
        # A section that sets only e.g. shutdown_timeout_s keeps its service's default port.
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, port in DEFAULT_METRICS_PORTS.items():
            section = out.get(name)
            if isinstance(section, dict) and "metrics_port" not in section:
                out[name] = {**section, "metrics_port": port}
        return out


class AlprSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ALPR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        # The YAML path is chosen in main and passed in; pydantic-settings must not look for one itself.
        yaml_file=None,
    )

    environment: Literal["development", "production"] = "development"
    # Sockets, lock files and other per-host runtime state of the edge pipeline.
    runtime_dir: Path = Path("/tmp/alpr")  # noqa: S108 - ipc sockets only; containers mount a private /tmp
    log: LogSettings = Field(default_factory=LogSettings)
    cameras: list[CameraSettings] = Field(default_factory=list)
    frame_store: FrameStoreSettings = Field(default_factory=FrameStoreSettings)
    endpoints: EndpointSettings = Field(default_factory=EndpointSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    track: TrackSettings = Field(default_factory=TrackSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    persist: PersistSettings = Field(default_factory=PersistSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    ocr: OcrSettings = Field(default_factory=OcrSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    view: ViewSettings = Field(default_factory=ViewSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)

    @model_validator(mode="after")
    def _unique_camera_ids(self) -> Self:
        seen: set[str] = set()
        for camera in self.cameras:
            if camera.id in seen:
                raise ValueError(f"camera id {camera.id!r} is used twice; ids must be unique")
            seen.add(camera.id)
        return self

    def endpoint(self, role: str) -> str:
        """The endpoint string of a socket role with `{runtime_dir}` filled in."""
        raw: str = getattr(self.endpoints, role)
        return raw.replace("{runtime_dir}", str(self.runtime_dir))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file's content arrives through init_settings (see load_settings), below the env.
        return (_InitOverEnv(settings_cls, init_settings, env_settings),)


class _InitOverEnv(PydanticBaseSettingsSource):
    """Explicit overrides > environment > YAML. `init_settings` carries both the YAML content and the
    explicit overrides (under a private key) so that the environment can sit between them."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init = init_settings
        self._env = env_settings

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        raise NotImplementedError  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        init = dict(self._init())
        overrides = init.pop("__overrides__", {})
        merged = _deep_merge(init, self._env())
        return _deep_merge(merged, overrides)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key (check its spelling and the section it is in)")
            continue
        shown = item.get("input")
        got = "" if isinstance(shown, dict | list) or shown is None else f" (got {shown!r})"
        lines.append(f"  {path}: {item['msg']}{got}")
    return "\n".join(lines)


def load_settings(
    config_path: Path | str | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> AlprSettings:
    """Read and validate the configuration. Raises `ConfigError` naming every bad key.

    `config_path` None means `$ALPR_CONFIG` if set, else defaults only; `overrides` (CLI flags) beat both
    the file and the environment.
    """
    env = os.environ
    path = Path(config_path) if config_path is not None else None
    if path is None and env.get(CONFIG_ENV_VAR):
        path = Path(env[CONFIG_ENV_VAR])
    content: dict[str, Any] = {}
    source = "defaults and environment"
    if path is not None:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"configuration file {path} must hold a mapping at the top, not {type(loaded).__name__}"
            )
        content = loaded
    init: dict[str, Any] = dict(content)
    if overrides:
        init["__overrides__"] = overrides
    try:
        return AlprSettings(**init)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from exc
