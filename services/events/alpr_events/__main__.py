"""`python -m alpr_events`: the same as `alpr events`."""

import sys

from alpr_shared.cli import run_service_command

if __name__ == "__main__":
    sys.exit(run_service_command("events"))
