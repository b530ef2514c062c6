"""Metric naming, memoised metrics and the /metrics + /health HTTP endpoints."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from alpr_shared.metrics import ServiceMetrics, metric_name


@pytest.mark.parametrize(
    ("service", "name", "full"),
    [
        ("detect", "inference_seconds", "alpr_detect_inference_seconds"),
        ("ingest", "frames_total", "alpr_ingest_frames_total"),
        ("ocr_worker", "queue_depth_jobs", "alpr_ocr_worker_queue_depth_jobs"),
    ],
)
def test_metric_names_follow_the_scheme(service: str, name: str, full: str) -> None:
    assert metric_name(service, name) == full


@pytest.mark.parametrize(
    ("service", "name"),
    [
        ("detect", "Inference_seconds"),
        ("detect", "inference"),
        ("detect", "latency_ms"),
        ("Detect", "x_total"),
        ("detect", ""),
    ],
)
def test_bad_metric_names_are_refused(service: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"alpr_<service>_<noun>_<unit>|snake case"):
        metric_name(service, name)


def test_metrics_are_shared_not_duplicated() -> None:
    metrics = ServiceMetrics("ingest")
    a = metrics.counter("frames_total", "Frames", ["camera"])
    b = metrics.counter("frames_total", "Frames", ["camera"])
    assert a is b
    with pytest.raises(ValueError, match="another type or labels"):
        metrics.gauge("frames_total", "Frames", ["camera"])
    with pytest.raises(ValueError, match="another type or labels"):
        metrics.counter("frames_total", "Frames", ["camera", "socket"])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own localhost server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        body = err.read().decode()
        err.close()
        return err.code, body


def test_http_endpoints() -> None:
    metrics = ServiceMetrics("detect")
    metrics.counter("frames_total", "Frames", ["camera"]).labels("cam1").inc(3)
    port = metrics.serve("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = _get(f"{base}/metrics")
        assert status == 200
        assert 'alpr_detect_frames_total{camera="cam1"} 3.0' in body
        assert _get(f"{base}/health/live") == (200, "live\n")
        assert _get(f"{base}/health/ready") == (503, "starting: service is starting\n")
        metrics.health.set_ready()
        metrics.health.set_not_ready("model", "model file missing")
        assert _get(f"{base}/health/ready") == (503, "model: model file missing\n")
        metrics.health.set_ready("model")
        assert _get(f"{base}/health/ready") == (200, "ready\n")
        metrics.health.set_live(False)
        assert _get(f"{base}/health/live")[0] == 503
        assert _get(f"{base}/nope")[0] == 404
    finally:
        metrics.close()


def test_port_in_use_gives_a_clear_error() -> None:
    first = ServiceMetrics("a")
    port = first.serve("127.0.0.1", 0)
    second = ServiceMetrics("b")
    try:
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            second.serve("127.0.0.1", port)
    finally:
        first.close()
        second.close()
