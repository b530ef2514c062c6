"""`alpr run`'s status: metrics parsed into stage rows, rates across restarts, progress, plain and rich
rendering, the summary text."""

from __future__ import annotations

import io
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from alpr_shared.run import status
from alpr_shared.run.runner import Counter, _remove_stale_runtime_dirs
from alpr_shared.run.summary import RunSummary, StoredEvent, render

INGEST = """
# TYPE alpr_ingest_frames_total counter
alpr_ingest_frames_total{camera="a"} 30.0
alpr_ingest_frames_total{camera="b"} 12.0
# TYPE alpr_ingest_camera_finished_info gauge
alpr_ingest_camera_finished_info{camera="a"} 1.0
alpr_ingest_camera_finished_info{camera="b"} 0.0
"""

OCR = """
# TYPE alpr_ocr_queue_jobs gauge
alpr_ocr_queue_jobs 2.0
# TYPE alpr_ocr_in_flight_jobs gauge
alpr_ocr_in_flight_jobs 1.0
# TYPE alpr_ocr_jobs_total counter
alpr_ocr_jobs_total{outcome="answered"} 10.0
alpr_ocr_jobs_total{outcome="sent"} 13.0
# TYPE alpr_ocr_plate_reads_total counter
alpr_ocr_plate_reads_total{final="true"} 4.0
alpr_ocr_plate_reads_total{final="false"} 9.0
"""


def test_metrics_are_summed_by_label() -> None:
    s = status.parse_metrics(INGEST)
    assert status.total(s, "alpr_ingest_frames_total") == 42
    assert status.total(s, "alpr_ingest_frames_total", camera="b") == 12
    assert status.series(s, "alpr_ingest_camera_finished_info", "camera") == {"a": 1.0, "b": 0.0}
    assert status.total(None, "anything") == 0


def test_rows_show_rate_queue_and_counts() -> None:
    model = status.StatusModel()
    model.update("ocr", status.parse_metrics(OCR))
    first = model.row("ocr", "ocr", "ready", 123, restarts=0, now=100.0)
    assert first.queue == 3 and first.detail == "4 plates read" and first.rate == 0
    model.update("ocr", status.parse_metrics(OCR.replace('answered"} 10.0', 'answered"} 20.0')))
    second = model.row("ocr", "ocr", "ready", 123, restarts=0, now=102.0)
    assert second.rate == 5.0 and second.rate_unit == "reads/s"


def test_a_rate_starts_again_when_the_process_restarted() -> None:
    rate = status.Rate()
    rate.add(100, 0.0)
    assert rate.add(110, 1.0) == 10
    assert rate.add(3, 2.0) == 0  # counter went back: new process
    assert rate.add(5, 3.0) == 2


def test_a_counter_adds_up_across_restarts() -> None:
    counter = Counter()
    counter.update(10)
    counter.update(15)
    counter.update(2)  # restarted
    assert counter.update(4) == 19


def test_progress_and_rendering() -> None:
    samples = status.parse_metrics(INGEST)
    progress = status.camera_progress(samples, {"a": 30, "b": 40, "c": None})
    assert [(p.camera, p.frames, p.finished) for p in progress] == [
        ("a", 30, True),
        ("b", 12, False),
        ("c", 0, False),
    ]
    rows = [status.StageRow("ingest", "ready", 1, 2, rate=14.5, rate_unit="frames/s", detail="42 frames")]
    line = status.render_plain(rows, progress, 12.0)
    assert "a 100%" in line and "b  30%" in line and "c 0 frames" in line
    assert "ingest: ready, 14.5 frames/s, restarts 2, 42 frames" in line
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(status.render_rich(rows, progress, 12.0, "alpr run"))
    text = console.export_text()
    assert "ingest" in text and "14.5 frames/s" in text and "12/40 frames" in text


def test_the_summary_names_counts_and_a_curl_command() -> None:
    seen = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    summary = RunSummary(["gate"], 10.0, 250, 12)
    summary.events = [
        StoredEvent("e1", "gate", "ABC123", 0.97, seen, 3, []),
        StoredEvent("e2", "gate", "XYZ9", 0.88, seen, 2, ["stolen"]),
    ]
    text = render(summary, api="http://127.0.0.1:8080", api_key="alpr_k_s", note=None)
    assert "frames          250 (25.0 fps)" in text
    assert "events          2" in text and "watchlist hits  1" in text
    assert "ABC123" in text and "stolen" in text
    assert "curl -s -H 'X-API-Key: alpr_k_s' 'http://127.0.0.1:8080/v1/events?limit=20'" in text


def test_runtime_dirs_of_killed_runs_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "alpr-run-999999999-abc"  # above any pid_max: no such process
    alive = tmp_path / f"alpr-run-{os.getpid()}-abc"
    other = tmp_path / "alpr-run-test-abc"
    for path in (dead, alive, other):
        (path / "pg").mkdir(parents=True)
    _remove_stale_runtime_dirs()
    assert not dead.exists() and alive.exists() and other.exists()
