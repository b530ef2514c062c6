"""`alpr tap`: subscribe to the frame stream like detect does, read every frame from shared memory, and
report what arrives: frames/s per camera, handoff latency, stale (overwritten) frames, shed frames.

A debugging tool for the transport, and the consumer half of `alpr demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq.asyncio

from alpr_shared.cli import add_common_options, settings_from_args
from alpr_shared.framestore import FrameReader, FrameStoreError, StaleFrameError
from alpr_shared.schemas import FrameReady
from alpr_shared.settings import AlprSettings, ConfigError
from alpr_shared.transport import FrameSubscription, MessageSocket, open_socket


@dataclass
class TapReport:
    frames: int = 0
    stale: int = 0
    shed: int = 0
    missing: int = 0  # sequence gaps: frames the publisher sent that never reached us
    cameras: set[str] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    checksums: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> str:
        fps = self.frames / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"{self.frames} frames from {len(self.cameras)} camera(s) in {self.elapsed_s:.1f}s ({fps:.1f} fps); "
            f"handoff p50 {self.percentile(50):.2f} ms, p99 {self.percentile(99):.2f} ms; "
            f"stale {self.stale}, shed {self.shed}, missing {self.missing}"
        )


async def tap(
    settings: AlprSettings,
    *,
    max_frames: int | None = None,
    seconds: float | None = None,
    idle_timeout: float = 5.0,
    progress: bool = True,
) -> TapReport:
    """Consume frames until `max_frames`, `seconds`, or `idle_timeout` without a frame."""
    report = TapReport()
    context = zmq.asyncio.Context()
    sub: MessageSocket[FrameReady] = open_socket(
        context,
        name="frames",
        pattern="sub",
        spec=settings.endpoint("frames"),
        default_mode="connect",
        message_type=FrameReady,
        hwm=settings.endpoints.frames_hwm,
    )
    frames = FrameSubscription(sub)
    reader = FrameReader()
    started = time.monotonic()
    next_print = started + 1.0
    try:
        while max_frames is None or report.frames < max_frames:
            if seconds is not None and time.monotonic() - started >= seconds:
                break
            try:
                batch = await frames.next_batch(timeout=idle_timeout)
            except TimeoutError:
                break
            report.shed, report.missing = frames.shed, frames.missing
            for msg in batch:
                latency_ms = (time.monotonic_ns() - msg.published_at_ns) / 1e6
                try:
                    with reader.frame(msg.frame) as pixels:
                        crc = zlib.crc32(pixels.data)
                except StaleFrameError:
                    report.stale += 1
                    continue
                except FrameStoreError as exc:
                    print(f"tap: {exc}", file=sys.stderr)
                    continue
                report.frames += 1
                report.cameras.add(msg.camera_id)
                report.latencies_ms.append(latency_ms)
                report.checksums[msg.camera_id] = crc
            now = time.monotonic()
            if progress and now >= next_print:
                report.elapsed_s = now - started
                print(f"tap: {report.summary()}", flush=True)
                next_print = now + 1.0
    finally:
        report.elapsed_s = time.monotonic() - started
        reader.close()
        sub.close()
        context.destroy(linger=0)
    return report


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="alpr tap", description=__doc__)
    add_common_options(parser)
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--seconds", type=float, help="stop after this long")
    parser.add_argument(
        "--idle-timeout", type=float, default=5.0, help="stop after this long without a frame"
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = asyncio.run(
        tap(settings, max_frames=args.frames, seconds=args.seconds, idle_timeout=args.idle_timeout)
    )
    print(f"tap: done: {report.summary()}")
    return 0 if report.frames else 1
