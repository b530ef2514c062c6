"""`alpr run [SOURCE …]`: the command line of the supervisor (see `runner.py` for what it does)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from alpr_shared.run.plan import DATA_HOME_ENV, RunOptions
from alpr_shared.run.runner import StatusMode, run

EPILOG = f"""\
examples:
  alpr run demo.mp4                      files: ends by itself, then prints a summary and a curl example
  alpr run rtsp://user:pw@10.0.0.5/cam   live: runs until Ctrl-C
  alpr run cameras.yaml                  the cameras (and any other settings) of a configuration file
  alpr run                               no source: only the database and the API, over the stored data
  alpr run demo.mp4 --kafka 127.0.0.1:9092 --database-url postgresql://alpr@db/alpr

Data (database, events outbox, logs, the generated run.yaml) lives in --data-dir, else ${DATA_HOME_ENV},
else ./alpr-data, and is kept across runs.
exit codes: 0 done (or stopped by Ctrl-C), 1 a stage failed for good, 2 bad arguments or configuration.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alpr run",
        description="Run the whole system: every stage as its own process, supervised.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="video file, folder of images, rtsp://…, or a *.yaml camera config",
    )
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        help="base configuration (thresholds, watchlist, …); run overrides endpoints",
    )
    p.add_argument(
        "--data-dir", type=Path, help=f"where data lives (default ${DATA_HOME_ENV} or ./alpr-data)"
    )
    p.add_argument(
        "--kafka", metavar="BOOTSTRAP", help="use this Kafka (events → topic → persist) instead of the outbox"
    )
    p.add_argument("--database-url", metavar="URL", help="use this PostgreSQL instead of the embedded one")
    p.add_argument(
        "--ocr-workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="OCR worker processes (default: half the cores)",
    )
    p.add_argument(
        "--api-port",
        type=int,
        help="port of the REST API (default: query.port of --config, else 8080 if free, else any free port)",
    )
    p.add_argument("--no-api", action="store_true", help="do not start the query service (REST API)")
    p.add_argument(
        "--keep-serving",
        action="store_true",
        help="file runs: keep the API and the database up after the summary, until Ctrl-C",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="file runs: decode files as fast as possible, not at their frame rate (detect sheds what it cannot take)",
    )
    p.add_argument("--view", action="store_true", help="live annotated view in the browser")
    p.add_argument("--view-port", type=int, default=8090, help="port of the live view (default 8090)")
    p.add_argument(
        "--save-video", type=Path, metavar="OUT", help="with --view: also write the annotated stream to OUT"
    )
    p.add_argument(
        "--status",
        choices=["live", "plain", "off"],
        help="status display (default: live in a terminal, plain otherwise)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.ocr_workers < 1:
        parser().error("--ocr-workers must be at least 1")
    if args.save_video is not None and not args.view:
        args.view = True  # the annotated stream comes from the view process
    options = RunOptions(
        sources=list(args.sources),
        config=args.config,
        data_dir=args.data_dir,
        kafka=args.kafka,
        database_url=args.database_url,
        ocr_workers=args.ocr_workers,
        view=args.view,
        view_port=args.view_port,
        save_video=args.save_video.resolve() if args.save_video else None,
        api_port=args.api_port,
        keep_serving=args.keep_serving,
        api=not args.no_api,
        realtime=not args.fast,
    )
    mode: StatusMode = args.status or ("live" if sys.stdout.isatty() else "plain")
    return run(options, status_mode=mode)
