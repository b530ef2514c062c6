"""`python -m alpr_ocr [worker]`: the OCR coordinator (`alpr ocr`) or, with `worker`, `alpr ocr-worker`."""

import sys

from alpr_shared.cli import run_service_command

if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(run_service_command("ocr-worker", sys.argv[2:]))
    sys.exit(run_service_command("ocr"))
