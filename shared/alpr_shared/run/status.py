"""Live status of `alpr run`: each child's /metrics scraped once a second and turned into one row per stage
(state, restarts, rate, queue depth, counts) plus a progress bar per file source.

Everything shown comes from the services' own Prometheus metrics (docs/architecture.md lists them), so
what the terminal shows is what a dashboard would show. Rendering: a `rich` live table in a terminal, one
plain line every few seconds otherwise (logs, CI).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def total(samples: Samples | None, name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels` (0 when absent)."""
    if not samples:
        return 0.0
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def series(samples: Samples | None, name: str, label: str) -> dict[str, float]:
    """`name` by the value of one label (e.g. per camera)."""
    out: dict[str, float] = {}
    for (n, ls), v in (samples or {}).items():
        if n == name:
            value = dict(ls).get(label)
            if value is not None:
                out[value] = out.get(value, 0.0) + v
    return out


async def scrape(client: httpx.AsyncClient, port: int) -> Samples | None:
    try:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_metrics(response.text)


async def ready(client: httpx.AsyncClient, port: int) -> bool:
    try:
        response = await client.get(f"http://127.0.0.1:{port}/health/ready", timeout=1.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass
class Rate:
    """Per-second rate of a counter, smoothed over the last few scrapes."""

    window_s: float = 5.0
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, value: float, now: float) -> float:
        if self.points and value < self.points[-1][1]:
            self.points.clear()  # the process restarted: its counters began again
        self.points.append((now, value))
        while len(self.points) > 2 and now - self.points[0][0] > self.window_s:
            self.points.pop(0)
        (t0, v0), (t1, v1) = self.points[0], self.points[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass
class StageRow:
    name: str
    state: str
    pid: int | None
    restarts: int
    rate: float | None = None  # per second, what the stage does (frames, jobs, reads, events)
    rate_unit: str = ""
    queue: float | None = None
    detail: str = ""


# What each stage's rate counts, and where its queue depth comes from.
_RATE: dict[str, tuple[str, dict[str, str], str]] = {
    "ingest": ("alpr_ingest_frames_total", {}, "frames/s"),
    "detect": ("alpr_detect_frames_out_total", {}, "frames/s"),
    "track": ("alpr_track_messages_received_total", {}, "frames/s"),
    "ocr": ("alpr_ocr_jobs_total", {"outcome": "answered"}, "reads/s"),
    "ocr-worker": ("alpr_ocr_worker_jobs_total", {}, "reads/s"),
    "events": ("alpr_events_reads_total", {}, "reads/s"),
    "persist": ("alpr_persist_records_total", {}, "events/s"),
}


@dataclass
class Progress:
    camera: str
    frames: float
    total: int | None  # None: a live source
    finished: bool


class StatusModel:
    """Turns scrapes into rows; keeps the rates between scrapes."""

    def __init__(self) -> None:
        self._rates: dict[str, Rate] = {}
        self.samples: dict[str, Samples | None] = {}

    def update(self, name: str, samples: Samples | None) -> None:
        if samples is not None:
            self.samples[name] = samples

    def row(
        self, name: str, stage: str, state: str, pid: int | None, *, restarts: int, now: float
    ) -> StageRow:
        row = StageRow(name, state, pid, restarts)
        s = self.samples.get(name)
        if stage in _RATE and s is not None:
            metric, labels, unit = _RATE[stage]
            rate = self._rates.setdefault(name, Rate())
            row.rate = rate.add(total(s, metric, **labels), now)
            row.rate_unit = unit
        if s is None:
            return row
        if stage == "ingest":
            row.detail = f"{total(s, 'alpr_ingest_frames_total'):.0f} frames"
        elif stage == "detect":
            handled = (
                total(s, "alpr_detect_frames_out_total")
                + total(s, "alpr_detect_frames_dropped_total")
                + total(s, "alpr_detect_frames_skipped_total")
            )
            row.queue = max(total(s, "alpr_detect_frames_in_total") - handled, 0)
            dropped = total(s, "alpr_detect_frames_dropped_total")
            row.detail = f"{total(s, 'alpr_detect_detections_total', label='plate'):.0f} plates seen"
            if dropped:
                row.detail += f", {dropped:.0f} frames shed (detect slower than the source)"
        elif stage == "track":
            row.queue = total(s, "alpr_track_open_tracks_count")
            row.detail = f"{total(s, 'alpr_track_lifecycle_messages_total', phase='started'):.0f} tracks"
        elif stage == "ocr":
            row.queue = total(s, "alpr_ocr_queue_jobs") + total(s, "alpr_ocr_in_flight_jobs")
            row.detail = f"{total(s, 'alpr_ocr_plate_reads_total', final='true'):.0f} plates read"
        elif stage == "ocr-worker":
            row.queue = total(s, "alpr_ocr_worker_busy_jobs")
        elif stage == "events":
            row.detail = (
                f"{total(s, 'alpr_events_events_total', kind='new'):.0f} events, "
                f"{total(s, 'alpr_events_alerts_total'):.0f} watchlist hits"
            )
        elif stage == "persist":
            row.queue = total(s, "alpr_persist_outbox_backlog_messages") + total(
                s, "alpr_persist_consumer_lag_messages"
            )
            stored = total(s, "alpr_persist_events_total", outcome="inserted")
            row.detail = f"{stored:.0f} events stored"
        return row


def render_plain(rows: Iterable[StageRow], progress: Iterable[Progress], elapsed_s: float) -> str:
    parts = [f"[{elapsed_s:5.0f} s]"]
    for p in progress:
        if p.total:
            parts.append(f"{p.camera} {min(p.frames / p.total, 1.0):4.0%}")
        else:
            parts.append(f"{p.camera} {p.frames:.0f} frames")
    for row in rows:
        bits = [row.state]
        if row.rate is not None:
            bits.append(f"{row.rate:.1f} {row.rate_unit}")
        if row.queue:
            bits.append(f"q {row.queue:.0f}")
        if row.restarts:
            bits.append(f"restarts {row.restarts}")
        if row.detail:
            bits.append(row.detail)
        parts.append(f"{row.name}: {', '.join(bits)}")
    return " | ".join(parts)


def render_rich(
    rows: Iterable[StageRow], progress: Iterable[Progress], elapsed_s: float, header: str
) -> object:
    """A rich renderable: the header, one progress bar per file source, the stage table."""
    from rich.console import Group  # noqa: PLC0415 - rich only matters in a terminal
    from rich.progress_bar import ProgressBar  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    parts: list[object] = [Text(f"{header}   {elapsed_s:.0f} s", style="bold")]
    for p in progress:
        line = Table.grid(padding=(0, 1))
        line.add_column(width=20)
        line.add_column(width=40)
        line.add_column()
        if p.total:
            share = min(p.frames / p.total, 1.0)
            line.add_row(
                p.camera,
                ProgressBar(total=p.total, completed=min(p.frames, p.total), width=40),
                f"{share:4.0%}  {p.frames:.0f}/{p.total} frames" + ("  done" if p.finished else ""),
            )
        else:
            line.add_row(p.camera, Text("live"), f"{p.frames:.0f} frames")
        parts.append(line)
    table = Table(expand=False, show_edge=False, pad_edge=False)
    for column, justify in (
        ("stage", "left"),
        ("state", "left"),
        ("pid", "right"),
        ("restarts", "right"),
        ("rate", "right"),
        ("queue", "right"),
        ("", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    styles = {"ready": "green", "running": "green", "backoff": "red", "failed": "bold red", "stopped": "dim"}
    for row in rows:
        table.add_row(
            row.name,
            Text(row.state, style=styles.get(row.state, "yellow")),
            str(row.pid or ""),
            str(row.restarts or ""),
            f"{row.rate:.1f} {row.rate_unit}" if row.rate is not None else "",
            f"{row.queue:.0f}" if row.queue is not None else "",
            row.detail,
        )
    parts.append(table)
    return Group(*parts)  # type: ignore[arg-type]


def camera_progress(ingest: Samples | None, totals: Mapping[str, int | None]) -> list[Progress]:
    frames = series(ingest, "alpr_ingest_frames_total", "camera")
    finished = series(ingest, "alpr_ingest_camera_finished_info", "camera")
    return [
        Progress(cam, frames.get(cam, 0.0), totals.get(cam), finished.get(cam, 0.0) >= 1) for cam in totals
    ]
