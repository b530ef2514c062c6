"""`python -m alpr_track`: the same as `alpr track`."""

import sys

from alpr_shared.cli import run_service_command

if __name__ == "__main__":
    sys.exit(run_service_command("track"))
