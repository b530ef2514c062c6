"""Prometheus metrics and health endpoints of one service.

Each service owns one `ServiceMetrics` (its own registry, so tests and the all-in-one supervisor can run
several services in one interpreter without name clashes) and serves `/metrics`, `/health/live` and
`/health/ready` on its own port from a small stdlib HTTP server thread.

Names follow `alpr_<service>_<noun>_<unit>` (`alpr_detect_inference_seconds`, `alpr_ingest_frames_total`);
`metric_name()` enforces it. Labels are bounded values (camera, socket, reason) — never a plate text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_M = TypeVar("_M", Counter, Gauge, Histogram)

UNITS = ("total", "seconds", "bytes", "ratio", "info", "frames", "messages", "jobs", "fps", "pixels", "count")
_NAME_RE = re.compile(r"^alpr_[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
_SERVICE_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Latency buckets from 0.1 ms to 10 s: frame handoffs sit at the bottom, OCR and DB batches higher up.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


def metric_name(service: str, name: str) -> str:
    """`alpr_<service>_<name>`, checked: lower-case snake case ending in a unit from `UNITS`."""
    if not _SERVICE_RE.match(service):
        raise ValueError(f"service name {service!r} must be lower-case snake case")
    full = f"alpr_{service}_{name}"
    if not _NAME_RE.match(full) or full.rsplit("_", 1)[1] not in UNITS:
        raise ValueError(f"metric {full!r} must be alpr_<service>_<noun>_<unit> with a unit in {UNITS}")
    return full


class HealthState:
    """Liveness (the process is not wedged) and readiness (it can do its job: sockets bound, models loaded,
    database reachable). Thread-safe: services set it from the event loop, the HTTP thread reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live = True
        self._not_ready: dict[str, str] = {"starting": "service is starting"}

    def set_ready(self, component: str = "starting") -> None:
        with self._lock:
            self._not_ready.pop(component, None)

    def set_not_ready(self, component: str, reason: str) -> None:
        with self._lock:
            self._not_ready[component] = reason

    def set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live

    @property
    def live(self) -> bool:
        with self._lock:
            return self._live

    def readiness(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            return (not self._not_ready, dict(self._not_ready))


class ServiceMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry()
        self.health = HealthState()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}

    def _get_or_create(
        self, kind: type[_M], name: str, documentation: str, labels: Sequence[str], **kwargs: Any
    ) -> _M:
        # Memoised: components created per camera or per socket share one metric, labelled, instead of
        # colliding in the registry.
        full = metric_name(self.service, name)
        with self._lock:
            existing = self._metrics.get(full)
            if existing is not None:
                if not isinstance(existing, kind) or tuple(existing._labelnames) != tuple(labels):
                    raise ValueError(f"metric {full} already exists with another type or labels")
                return existing
            metric = kind(full, documentation, labels, registry=self.registry, **kwargs)
            self._metrics[full] = metric
            return metric

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return self._get_or_create(Counter, name, documentation, labels)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get_or_create(Gauge, name, documentation, labels)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._get_or_create(Histogram, name, documentation, labels, buckets=buckets)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- HTTP ----------------------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Start serving /metrics and /health/* in a daemon thread; returns the bound port (port 0 picks one)."""
        if self._server is not None:
            raise RuntimeError("metrics server already running")
        handler = type("_Handler", (_Handler,), {"metrics": self})
        try:
            server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror} (is the port in use?)"
            ) from exc
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"{self.service}-metrics", daemon=True
        )
        self._thread.start()
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


class _Handler(BaseHTTPRequestHandler):
    metrics: ClassVar[ServiceMetrics]
    server_version = "alpr"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/health/live":
            live = self.metrics.health.live
            self._send(200 if live else 503, b"live\n" if live else b"not live\n")
        elif path == "/health/ready":
            ready, reasons = self.metrics.health.readiness()
            body = "ready\n" if ready else "".join(f"{k}: {v}\n" for k, v in sorted(reasons.items()))
            self._send(200 if ready else 503, body.encode())
        else:
            self._send(404, b"not found: try /metrics, /health/live or /health/ready\n")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # scrapes every few seconds would drown the service's own logs
