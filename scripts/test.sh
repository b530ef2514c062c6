#!/usr/bin/env bash
# The one test command (README, .ci/run): sets itself up, then runs lint, types and every test ring
# (unit, integration against real PostgreSQL and a Kafka-protocol broker, e2e). Fails on the first
# failing step; "no tests collected" is a failure too. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

step() { printf '\n== %s\n' "$*"; }
step "ruff check"
.venv/bin/ruff check .
step "ruff format --check"
.venv/bin/ruff format --check .
step "mypy (strict on shared/ and services/)"
.venv/bin/mypy
step "pytest"
set +e
.venv/bin/pytest tests "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "test: no tests were collected — that is a failure, not a pass" >&2
fi
exit $status
