"""`python -m alpr_ingest`: the same as `alpr ingest`."""

import sys

from alpr_shared.cli import run_service_command

if __name__ == "__main__":
    sys.exit(run_service_command("ingest"))
