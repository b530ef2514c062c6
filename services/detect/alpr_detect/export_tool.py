"""Export an ultralytics YOLO checkpoint to ONNX with a dynamic batch axis (run by `alpr models export`).

This module runs in the *export* environment (torch CPU + ultralytics + onnx + onnxslim, the `export`
extra), as a child process of `alpr models export`: the service itself never imports torch or
ultralytics. It takes paths on the command line, prints one JSON line describing what it wrote, and
does nothing at import time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path


def export(checkpoint: Path, output: Path, *, imgsz: int, opset: int) -> dict[str, object]:
    # Never let ultralytics reach for the network (fonts, updates, hub): everything it needs is local.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    # Export-time only dependency, absent from the service environment (and from mypy's view of it).
    yolo_class = importlib.import_module("ultralytics").YOLO

    with tempfile.TemporaryDirectory(prefix="alpr-export-") as tmp:
        work = Path(tmp) / checkpoint.name
        shutil.copyfile(checkpoint, work)
        model = yolo_class(str(work))
        names = dict(model.names)
        # dynamic=True: batch (and height/width) are symbolic, so one file serves every batch size.
        written = model.export(
            format="onnx", imgsz=imgsz, opset=opset, simplify=True, dynamic=True, half=False, device="cpu"
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written), output)
    return {"output": str(output), "names": names, "imgsz": imgsz, "opset": opset}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args(argv)
    result = export(args.checkpoint, args.output, imgsz=args.imgsz, opset=args.opset)
    sys.stdout.write("ALPR_EXPORT " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
