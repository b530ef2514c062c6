"""`python -m alpr_query`: the same as `alpr query`."""

import sys

from alpr_shared.cli import run_service_command

if __name__ == "__main__":
    sys.exit(run_service_command("query"))
