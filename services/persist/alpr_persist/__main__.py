"""`python -m alpr_persist`: the same as `alpr persist`."""

import sys

from alpr_shared.cli import run_service_command

if __name__ == "__main__":
    sys.exit(run_service_command("persist"))
