#!/usr/bin/env bash
# The main job at this stage of the project: set up, then show the edge transport working across
# processes (`alpr demo`: a generated video ingested on two cameras, read back through shared memory).
# Arguments go to `alpr demo` (see `.venv/bin/alpr demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
ALPR_SKIP_SYSTEM_DEPS="${ALPR_SKIP_SYSTEM_DEPS:-1}" bash scripts/bootstrap.sh
exec .venv/bin/alpr demo "$@"
