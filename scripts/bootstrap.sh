#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine, idempotently:
#   - Debian packages the tests and services use (PostgreSQL 15, …) via scripts/install-system-deps.sh
#   - a virtual environment in .venv with the project installed editable, with its dev extras
# Re-running is cheap: the venv is only (re)installed when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_system="${ALPR_SKIP_SYSTEM_DEPS:-0}"
if [[ "$skip_system" != "1" ]]; then
  bash scripts/install-system-deps.sh
fi

pick_python() {
  for candidate in "${ALPR_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "bootstrap: need Python >= 3.11 (set ALPR_PYTHON to its path)" >&2
  return 1
}

if [[ ! -x .venv/bin/python ]]; then
  py=$(pick_python)
  echo "bootstrap: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi

stamp=.venv/.alpr-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "bootstrap: installing the project, its embedded database and its dev tools into .venv (this takes a minute the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev,embedded]'
  echo "$want" > "$stamp"
fi
# Models (issue 6): the plate detector is exported once from its PyPI package into the models cache
# (~/.cache/alpr/models or $ALPR_MODELS_DIR); the export tools live in an environment of their own there.
.venv/bin/alpr models export --if-missing --install-tools
echo "bootstrap: ready (.venv/bin/alpr)"
