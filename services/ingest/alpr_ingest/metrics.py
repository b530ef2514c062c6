"""The ingest service's metrics, created once per process and labelled by camera.

Names follow `alpr_ingest_<noun>_<unit>`; the only labels are the camera id (from the configuration, so
bounded) and a fixed `reason`. A camera removed by a reload has its series removed too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from alpr_shared.metrics import ServiceMetrics

DROP_REASONS = ("fps_cap", "backlog")
GAP_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)


class IngestMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.frames = metrics.counter(
            "frames_total", "Frames decoded, written to the ring and published", ["camera"]
        )
        self.dropped = metrics.counter(
            "frames_dropped_total",
            "Decoded frames not published: fps_cap (target_fps), backlog (publisher queue full)",
            ["camera", "reason"],
        )
        self.write_seconds = metrics.histogram(
            "frame_write_seconds", "Time to write a decoded frame into its shared-memory slot", ["camera"]
        )
        self.connected = metrics.gauge(
            "camera_connected_info", "1 while the camera's source is open", ["camera"]
        )
        self.fps = metrics.gauge(
            "camera_fps", "Frames published per second (over the last seconds)", ["camera"]
        )
        # What a supervisor (`alpr run`) watches to know a file run is over.
        self.finished = metrics.gauge(
            "camera_finished_info",
            "1 once the camera's source (a file, a folder) reached its end",
            ["camera"],
        )
        self.last_frame_age = metrics.gauge(
            "camera_last_frame_age_seconds", "Seconds since the camera's last published frame", ["camera"]
        )
        self.reconnects = metrics.counter(
            "camera_reconnects_total", "Sessions that ended in a retry", ["camera"]
        )
        self.decode_errors = metrics.counter(
            "decode_errors_total",
            "Skipped: packets the decoder rejected, frames it had to conceal, images that did not load",
            ["camera"],
        )
        self.corrupt_packets = metrics.counter(
            "corrupt_packets_total", "Packets the demuxer flagged as corrupt (decoded anyway)", ["camera"]
        )
        self.gap_seconds = metrics.histogram(
            "camera_gap_seconds",
            "Time without frames before a reconnect delivered the camera's stream again",
            ["camera"],
            buckets=GAP_BUCKETS,
        )

    def register(self, camera: str, age: Callable[[], float]) -> None:
        """Create every series of a camera at zero, so dashboards and alerts see it before it fails."""
        for metric in (self.frames, self.reconnects, self.decode_errors, self.corrupt_packets):
            metric.labels(camera)
        for reason in DROP_REASONS:
            self.dropped.labels(camera, reason)
        self.connected.labels(camera).set(0)
        self.finished.labels(camera).set(0)
        self.fps.labels(camera).set(0)
        self.last_frame_age.labels(camera).set_function(age)

    def forget(self, camera: str) -> None:
        """Remove every series of a camera that is no longer configured."""
        for metric in (
            self.frames,
            self.write_seconds,
            self.connected,
            self.finished,
            self.fps,
            self.last_frame_age,
            self.reconnects,
            self.decode_errors,
            self.corrupt_packets,
            self.gap_seconds,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(camera)
        for reason in DROP_REASONS:
            with contextlib.suppress(KeyError):
                self.dropped.remove(camera, reason)
