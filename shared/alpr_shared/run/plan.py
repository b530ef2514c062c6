"""What `alpr run` starts: the generated configuration and one process spec per stage. Pure: no process is
started and no socket opened here, so every decision (camera ids, endpoints, ports, modes, start and stop
order) is unit-tested.

The generated file (`<data dir>/run.yaml`) is an ordinary configuration: every child reads it with
`alpr <service> -c run.yaml`, and a user can start a stage by hand with it to debug. What the run decides
overrides the user's `--config` file: endpoints (ipc sockets in a private runtime directory), metrics
ports, the frame-store namespace, the outbox and database locations, and the delivery mode.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alpr_shared.settings import ServicesSettings

DATA_HOME_ENV = "ALPR_DATA_HOME"
DEFAULT_DATA_DIR = Path("alpr-data")
# Sources that end by themselves; anything else (rtsp://, http://, /dev/video) runs until Ctrl-C.
FILE_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".m4v", ".webm", ".ts", ".mpg", ".mpeg", ".flv", ".wmv"}
CONFIG_SUFFIXES = {".yaml", ".yml"}
# The query service's default port (`query.port`), used when free.
DEFAULT_API_PORT = 8080
LIVE_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://", "srt://")

Stage = Literal[
    "postgres", "query", "persist", "events", "ocr-worker", "ocr", "track", "detect", "view", "ingest"
]

# Replaying the files from the start after one of these crashed recovers what the crash lost: frames,
# detections, tracks and reads held in memory. Events dedups the replayed passages (same plate, same
# camera, within events.dedup_window_s) into the events it already has.
REPLAY_AFTER_CRASH: frozenset[str] = frozenset({"ingest", "detect", "track", "ocr", "events"})


class RunError(RuntimeError):
    """`alpr run` cannot start as asked (bad source, data directory in use, missing extra)."""


@dataclass(frozen=True)
class RunOptions:
    """Everything the command line says, already parsed."""

    sources: list[str] = field(default_factory=list)
    config: Path | None = None
    data_dir: Path | None = None
    kafka: str | None = None
    database_url: str | None = None
    ocr_workers: int = 1
    view: bool = False
    view_port: int = 8090
    save_video: Path | None = None
    api_port: int | None = None
    keep_serving: bool = False
    api: bool = True  # start the query service (REST API)
    realtime: bool = True


@dataclass(frozen=True)
class ProcessSpec:
    """One child process of the run."""

    name: str  # unique: "ocr-worker-2"
    stage: Stage
    argv: list[str]
    metrics_port: int | None  # /metrics and /health/ready here (None: postgres)
    user: str | None = None  # run as this OS user (the embedded database as root)
    # A config error (exit 2) or a failing start will not fix itself: give up at once instead of retrying.
    env: dict[str, str] = field(default_factory=dict)


def data_dir(options: RunOptions, environ: dict[str, str] | None = None) -> Path:
    """--data-dir, else $ALPR_DATA_HOME, else ./alpr-data; always absolute (children run elsewhere)."""
    env = os.environ if environ is None else environ
    chosen = options.data_dir or (Path(env[DATA_HOME_ENV]) if env.get(DATA_HOME_ENV) else DEFAULT_DATA_DIR)
    return chosen.expanduser().resolve()


def is_live(source: str) -> bool:
    return source.startswith(LIVE_SCHEMES) or source.startswith("/dev/video")


def split_sources(sources: Sequence[str]) -> tuple[list[str], list[Path]]:
    """Camera sources and camera config files (`*.yaml`) among the SOURCE arguments."""
    cameras: list[str] = []
    configs: list[Path] = []
    for source in sources:
        if not is_live(source) and Path(source).suffix.lower() in CONFIG_SUFFIXES:
            configs.append(Path(source))
        else:
            cameras.append(source)
    return cameras, configs


def camera_id(source: str, taken: set[str]) -> str:
    """A readable, unique camera id: the file's stem or the stream's host (`gate-1`, `cam-2`)."""
    if is_live(source):
        host = source.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
        base = host
    else:
        base = Path(source).stem
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-_")[:40] or "cam"
    if not base[0].isalnum():
        base = f"cam-{base}"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def cameras_from_sources(sources: Sequence[str], *, realtime: bool, taken: set[str]) -> list[dict[str, Any]]:
    cameras: list[dict[str, Any]] = []
    for given in sources:
        source = given
        if not is_live(given):
            path = Path(given).expanduser()
            if not path.exists():
                raise RunError(
                    f"source {given!r} does not exist (a video file, a folder of images, or rtsp://…)"
                )
            source = str(path.resolve())
        entry: dict[str, Any] = {"id": camera_id(source, taken), "source": source}
        if not is_live(source):
            entry["realtime"] = realtime
            entry["name"] = Path(source).name
        cameras.append(entry)
    return cameras


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (the child binds it a moment later; a clash makes that child fail and restart)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Layout:
    """Where a run keeps things: persistent data and the per-run runtime directory."""

    data: Path
    runtime: Path  # ipc sockets and the database socket; removed at exit

    @property
    def config(self) -> Path:
        return self.data / "run.yaml"

    @property
    def outbox(self) -> Path:
        return self.data / "events-outbox.sqlite3"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def postgres(self) -> Path:
        return self.data / "postgres"

    @property
    def postgres_socket(self) -> Path:
        return self.runtime / "pg"

    @property
    def lock(self) -> Path:
        return self.data / "run.lock"


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    options: RunOptions,
    layout: Layout,
    *,
    base: dict[str, Any],
    cameras: list[dict[str, Any]],
    database_url: str,
    ports: dict[str, int],
    namespace: str,
    frame_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The configuration every child reads. `base` is the user's --config (and camera files) content."""
    embedded_broker = options.kafka is None
    config: dict[str, Any] = dict(base)
    config["cameras"] = [*base.get("cameras", []), *cameras]
    run: dict[str, Any] = {
        "runtime_dir": str(layout.runtime),
        "frame_store": {"namespace": namespace},
        # Children write JSON lines to their log files; the terminal shows the supervisor's status.
        "log": {"format": "json"},
        "endpoints": {
            role: f"ipc://{{runtime_dir}}/{role.replace('_', '-')}.sock"
            for role in ("frames", "detections", "tracks", "ocr_jobs", "plate_reads")
        },
        "database": {"url": database_url},
        "events": {
            "outbox_path": str(layout.outbox),
            "delivery": "local" if embedded_broker else "kafka",
        },
        "persist": {"source": "outbox" if embedded_broker else "kafka", "outbox_path": str(layout.outbox)},
        "services": {
            name: {"metrics_port": port}
            for name, port in ports.items()
            if name in ServicesSettings.model_fields
        },
    }
    if frame_size is not None and not base.get("frame_store", {}).get("max_width"):
        # Rings sized for the files' frames rather than 1080p: less shared memory per camera.
        run["frame_store"]["max_width"], run["frame_store"]["max_height"] = frame_size
    if embedded_broker:
        # No broker carries alpr.watchlist: events polls the table the API writes, in the same database
        # (unless the user's config turned runtime changes off).
        user_events = base.get("events") or {}
        if user_events.get("watchlist_source") != "none":
            run["events"]["watchlist_source"] = "database"
    else:
        run["kafka"] = {"bootstrap": options.kafka}
    query: dict[str, Any] = {}
    if options.api_port is not None:
        query["port"] = options.api_port
    elif not (base.get("query") or {}).get("port"):
        query["port"] = ports["api"]
    if embedded_broker:
        query["watchlist_publish"] = False  # no broker to publish watchlist changes to
    run["query"] = query
    merged = _deep_merge(config, run)
    if embedded_broker:
        # The older `watchlist_from_kafka` spoke of a broker this run does not have; watchlist_source decides.
        merged["events"].pop("watchlist_from_kafka", None)
    return merged


def service_argv(command: str, config: Path, metrics_port: int, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "alpr_shared.cli",
        command,
        "--config",
        str(config),
        "--metrics-port",
        str(metrics_port),
        *extra,
    ]


def process_specs(
    options: RunOptions,
    layout: Layout,
    *,
    ports: dict[str, int],
    postgres: list[str] | None,
    postgres_user: str | None,
    query_available: bool,
    view_available: bool,
) -> list[ProcessSpec]:
    """Every child, in start order: database, API, persist, events, OCR, track, detect, view, ingest.

    Each stage binds its output and the next connects to it (docs/architecture.md §2), so starting
    downstream first means no stage talks to an empty socket; ingest starts last, once every other stage
    is ready, so the first frames are not shed while detect is still loading its model."""
    specs: list[ProcessSpec] = []
    cfg = layout.config

    def service(name: str, stage: Stage, command: str) -> ProcessSpec:
        return ProcessSpec(name, stage, service_argv(command, cfg, ports[name]), ports[name])

    if postgres is not None:
        specs.append(ProcessSpec("postgres", "postgres", postgres, None, user=postgres_user))
    if query_available:
        specs.append(service("query", "query", "query"))
    # events creates the outbox that persist reads, so it starts first.
    specs += [service("events", "events", "events"), service("persist", "persist", "persist")]
    specs += [
        service(f"ocr-worker-{i}", "ocr-worker", "ocr-worker") for i in range(1, options.ocr_workers + 1)
    ]
    specs += [
        service("ocr", "ocr", "ocr"),
        service("track", "track", "track"),
        service("detect", "detect", "detect"),
    ]
    if options.view and view_available:
        extra = ["--port", str(options.view_port)]
        if options.save_video is not None:
            extra += ["--save-video", str(options.save_video)]
        argv = [sys.executable, "-m", "alpr_shared.cli", "view", "--config", str(cfg), *extra]
        specs.append(ProcessSpec("view", "view", argv, None))
    specs.append(service("ingest", "ingest", "ingest"))
    return specs


# Stop order: sources first so that work drains downstream; the database last.
STOP_ORDER: tuple[str, ...] = (
    "ingest",
    "view",
    "detect",
    "track",
    "ocr",
    "ocr-worker",
    "events",
    "persist",
    "query",
    "postgres",
)


def stop_order(specs: Sequence[ProcessSpec]) -> list[list[ProcessSpec]]:
    """Children grouped by stage, in the order they are stopped (the workers of one stage together)."""
    groups: list[list[ProcessSpec]] = []
    for stage in STOP_ORDER:
        group = [s for s in specs if s.stage == stage]
        if group:
            groups.append(group)
    return groups


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def allocate_ports(options: RunOptions) -> dict[str, int]:
    """A free metrics port per child; the API on DEFAULT_API_PORT when it is free (a stable address to
    bookmark), else on any free port."""
    names = ["ingest", "detect", "track", "ocr", "events", "persist", "query"]
    names += [f"ocr-worker-{i}" for i in range(1, options.ocr_workers + 1)]
    ports = {name: free_port() for name in names}
    ports["api"] = DEFAULT_API_PORT if port_free(DEFAULT_API_PORT) else free_port()
    ports["ocr_worker"] = ports["ocr-worker-1"] if options.ocr_workers else free_port()
    return ports
