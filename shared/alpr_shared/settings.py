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

    @model_validator(mode="after")
    def _idempotence_needs_all_acks(self) -> Self:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError(
                f"enable_idempotence requires acks 'all' (got {self.acks!r}); set both or neither"
            )
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
