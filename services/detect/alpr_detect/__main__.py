"""`python -m alpr_detect`: the same as `alpr detect`."""

import sys

from alpr_shared.cli import run_service_command

if __name__ == "__main__":
    sys.exit(run_service_command("detect"))
