"""`alpr view --config FILE [--port P] [--host H] [--save-video OUT.mp4] [--camera ID]`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alpr_shared.lifecycle import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from alpr_shared.logging import configure_logging
from alpr_shared.settings import ConfigError, load_settings
from alpr_shared.view.server import ViewError, ViewServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alpr view",
        description=(
            "Serve a live annotated view of the edge pipeline (boxes, track ids, plate text and confidence, "
            "per-camera fps) as an HTML page with one MJPEG stream per camera. Reads the same configuration "
            "as the services; listens without slowing them down."
        ),
    )
    parser.add_argument("--config", "-c", type=Path, help="YAML configuration file (default: $ALPR_CONFIG)")
    parser.add_argument("--port", type=int, help="HTTP port (default view.port, 8090)")
    parser.add_argument("--host", help="HTTP address (default view.host, 127.0.0.1: this machine only)")
    parser.add_argument("--save-video", type=Path, metavar="OUT.mp4", help="also write the annotated stream")
    parser.add_argument("--camera", metavar="ID", help="show (and record) only this camera")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override log.level"
    )
    parser.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")
    return parser


async def _run(server: ViewServer, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop.set)
    try:
        await server.run(host, port)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    view: dict[str, Any] = {}
    if args.port is not None:
        view["port"] = args.port
    if args.host is not None:
        view["host"] = args.host
    if view:
        overrides["view"] = view
    log: dict[str, str] = {}
    if args.log_level:
        log["level"] = args.log_level
    if args.log_format:
        log["format"] = args.log_format
    if log:
        overrides["log"] = log
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"alpr view: {exc}", file=sys.stderr)  # noqa: T201 - user-facing output
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format, service="view")
    try:
        server = ViewServer(settings, camera=args.camera, save_video=args.save_video)
    except ViewError as exc:
        print(f"alpr view: {exc}", file=sys.stderr)  # noqa: T201 - user-facing output
        return EXIT_CONFIG
    host, port = settings.view.host, settings.view.port
    print(f"alpr view: http://{host}:{port}/  (Ctrl-C to stop)", file=sys.stderr)  # noqa: T201 - user-facing output
    try:
        asyncio.run(_run(server, host, port))
    except ViewError as exc:
        print(f"alpr view: {exc}", file=sys.stderr)  # noqa: T201 - user-facing output
        return EXIT_FAILED
    return EXIT_OK
