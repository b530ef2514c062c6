"""`alpr eval DATASET`: plate-reading accuracy of the pipeline's per-frame code on labelled photos.

    alpr eval us                                  a shared OpenALPR set by name (us, eu, plate-crops-us)
    alpr eval path/to/folder --region us --workers 2 --report out/ --json
    alpr eval plate-crops-us --split heldout --recognizer ppocr-v4

Exit codes: 0 the evaluation ran (whatever the accuracy; `--min-exact` makes a low score fail),
1 it could not run (a model missing or failing) or scored below `--min-exact`, 2 bad usage, dataset,
label file or configuration.
"""

# ruff: noqa: T201 - a command-line tool: its output is for the user

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from alpr_shared.datasets import DatasetError
from alpr_shared.lifecycle import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from alpr_shared.settings import AlprSettings, ConfigError, load_settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alpr eval",
        description=(
            "Run labelled images through the pipeline's per-frame path (detect, best crop, OCR, "
            "normalisation and region-format correction) and report plate recall, exact-plate and "
            "character accuracy, the top confusions and ms/image."
        ),
    )
    p.add_argument(
        "dataset",
        help="a folder of labelled images (NAME.jpg + NAME.txt scene layout, or groundtruth.csv crops), "
        "or the name of a shared OpenALPR set: us, eu, plate-crops-us",
    )
    p.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="CODE",
        help="expected plate region(s) for format correction, e.g. us, eu, de (repeat or comma-separate; "
        "default: all known)",
    )
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes, each with its own models (default 1)"
    )
    p.add_argument("--report", type=Path, metavar="DIR", help="write an HTML page of the failures to DIR")
    p.add_argument("--json", action="store_true", help="end standard output with one JSON summary line")
    p.add_argument(
        "--recognizer",
        metavar="NAME",
        help="OCR recogniser, a value of ocr.recognizer.backend such as ppocr-v4 or plate-crnn "
        "(default: the configured one)",
    )
    p.add_argument(
        "--split",
        choices=["auto", "heldout", "train", "all"],
        default="auto",
        help="part of a crop folder: the shared US crops default to the held-out split training never "
        "sees (alpr_shared.datasets.crops_split); other folders to all",
    )
    p.add_argument(
        "--min-exact", type=float, metavar="SHARE", help="exit 1 when exact accuracy is below this (0-1)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--config", "-c", type=Path, help="YAML configuration file (default: $ALPR_CONFIG)")
    return p


def _regions(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out.extend(part.strip().lower() for part in value.split(",") if part.strip())
    return tuple(out)


def _detector_version(settings: AlprSettings) -> str:
    from alpr_detect.build import model_store  # noqa: PLC0415 - heavy imports only when a run starts

    d = settings.detect
    name = d.plate_model
    record = model_store(d).record(name) or {}
    sha = str(record.get("sha256", ""))[:12]
    return f"{name}{f' (onnx {sha})' if sha else ''}, input {d.input_size}, refine {d.refine}"


class UsageError(Exception):
    """Bad arguments, dataset, label file or configuration: exit 2 with the message."""


class RunError(Exception):
    """The evaluation could not run (a model missing or failing): exit 1 with the message."""


def _check_args(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.min_exact is not None and not 0.0 <= args.min_exact <= 1.0:
        raise UsageError("--min-exact is a share between 0 and 1")


def _evaluate(args: argparse.Namespace) -> float:
    """Run the evaluation and print its results; returns the exact accuracy."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None

    # Heavy imports (models, OpenCV) only once the arguments are known to be sane.
    from alpr_detect.backends.base import BackendError  # noqa: PLC0415
    from alpr_events.plates import FormatsError, PlateFormats  # noqa: PLC0415
    from alpr_ocr.reading import UnknownRecognizerError, open_reader  # noqa: PLC0415
    from alpr_ocr.recognizer import RecognizerError  # noqa: PLC0415
    from alpr_shared.evaluate.datasets import load_dataset  # noqa: PLC0415
    from alpr_shared.evaluate.frame import FrameOptions  # noqa: PLC0415
    from alpr_shared.evaluate.metrics import summarise  # noqa: PLC0415
    from alpr_shared.evaluate.report import RunInfo, json_line, table, write_html  # noqa: PLC0415
    from alpr_shared.evaluate.runner import run_dataset, write_crops  # noqa: PLC0415

    regions = _regions(args.region)
    try:
        dataset = load_dataset(args.dataset, split=args.split, limit=args.limit)
        PlateFormats.load(settings.events.formats_file).resolve(regions)
    except (DatasetError, FormatsError) as exc:
        raise UsageError(str(exc)) from None
    if dataset.skipped:
        print(f"alpr eval: {dataset.skipped} images without a label file were skipped", file=sys.stderr)

    try:
        reader = open_reader(settings.ocr, args.recognizer)  # fails fast on an unknown name
        recognizer = reader.version
        reader.close()
        detector = "none (crops)" if dataset.layout == "crop" else _detector_version(settings)
        done = run_dataset(
            dataset,
            settings,
            FrameOptions(regions=regions, recognizer=args.recognizer),
            workers=args.workers,
            keep_crops=args.report is not None,
            progress=not args.quiet,
        )
    except UnknownRecognizerError as exc:
        raise UsageError(str(exc)) from None
    except (BackendError, RecognizerError) as exc:
        raise RunError(str(exc)) from None

    results = [d.result for d in done]
    if args.report is not None:
        results = write_crops(done, args.report)
    summary = summarise(results)
    info = RunInfo(
        dataset=f"{dataset.path.name} ({dataset.path})",
        layout=dataset.layout,
        split=dataset.split,
        detector=detector,
        recognizer=recognizer,
        regions=regions,
        workers=args.workers,
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    )
    print(table(summary, info))
    if args.report is not None:
        print(f"report: {write_html(results, summary, info, args.report)}")
    if args.json:
        print(json_line(summary, info))
    sys.stdout.flush()
    return summary.exact_accuracy


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        exact = _evaluate(args)
    except UsageError as exc:
        print(f"alpr eval: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RunError as exc:
        print(f"alpr eval: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.min_exact is not None and exact < args.min_exact:
        print(
            f"alpr eval: exact accuracy {exact:.1%} is below --min-exact {args.min_exact:.1%}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
