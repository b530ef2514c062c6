#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when they are missing. Safe to run again: it does
# nothing (not even `apt-get update`) when everything is in place.
#
#   scripts/install-system-deps.sh          install what is missing
#   scripts/install-system-deps.sh --check  only report; exit 1 if something is missing
#
# What the tests need from the system:
#   postgresql-15  PostgreSQL 15 server, initdb/pg_ctl in /usr/lib/postgresql/15/bin; on Debian 12 it also
#                  carries the contrib extensions (pg_trgm): `postgresql-contrib-15` is only a virtual
#                  package that postgresql-15 provides. Pulls in postgresql-client-15 (psql) and
#                  postgresql-common, which creates the `postgres` OS user the harness runs the server as
#                  when tests run as root.
#   util-linux     `runuser` (essential on Debian; listed so a trimmed image says so rather than failing later).
#   GStreamer      the RTSP test server (tests/harness/rtsp.py) runs on Debian's /usr/bin/python3 with
#                  python3-gi and gir1.2-gst-rtsp-server-1.0; it encodes H.264 with x264enc (plugins-ugly)
#                  and payloads it with rtph264pay (plugins-good); plugins-base/bad and libav cover the
#                  ingest service's GStreamer decoder path (decodebin, h264parse, avdec_h264).
# Debian's postgresql-15 also creates and starts a default cluster on port 5432; the tests never use it.
# The Kafka-protocol test broker (noida-db) comes from PyPI with the dev extras, not from here.
set -euo pipefail

PG_MAJOR=15
PACKAGES=(
    "postgresql-${PG_MAJOR}" "util-linux"
    "python3-gi" "gir1.2-gst-rtsp-server-1.0" "gstreamer1.0-tools"
    "gstreamer1.0-plugins-base" "gstreamer1.0-plugins-good" "gstreamer1.0-plugins-bad"
    "gstreamer1.0-plugins-ugly" "gstreamer1.0-libav"
    "chromium" # headless browser: tests/integration/test_view_*.py load the live view (`alpr view`)
    "wrk"      # HTTP load generator of bench/query.py (C, event-driven: leaves the 2 cores to the servers)
)
# Files that must exist afterwards, whatever package brought them.
REQUIRED_FILES=(
    "/usr/lib/postgresql/${PG_MAJOR}/bin/initdb"
    "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_ctl"
    "/usr/lib/postgresql/${PG_MAJOR}/bin/psql"
    "/usr/share/postgresql/${PG_MAJOR}/extension/pg_trgm.control"
    "/usr/bin/python3"
    "/usr/bin/gst-inspect-1.0"
    "/usr/bin/wrk"
)

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

check_only=false
case "${1:-}" in
    "") ;;
    --check) check_only=true ;;
    -h | --help)
        sed -n '2,6p' "$0"
        exit 0
        ;;
    *)
        log "unknown argument: $1 (try --help)"
        exit 2
        ;;
esac

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# Fills the array `absent` with the REQUIRED_FILES that do not exist.
find_absent_files() {
    absent=()
    local f
    for f in "${REQUIRED_FILES[@]}"; do
        [[ -e "$f" ]] || absent+=("$f")
    done
}

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    log "this script installs Debian packages with apt-get; on another system install PostgreSQL ${PG_MAJOR}"
    log "(with pg_trgm) yourself and set ALPR_PG_BINDIR to its bin directory"
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if is_installed "$pkg"; then
        log "ok: $pkg is installed"
    else
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    find_absent_files
    if [[ ${#absent[@]} -eq 0 ]]; then
        log "nothing to do"
        exit 0
    fi
    log "packages are installed but these files are missing:"
    printf '  %s\n' "${absent[@]}" >&2
    log "reinstall postgresql-${PG_MAJOR} (apt-get install --reinstall postgresql-${PG_MAJOR})"
    exit 1
fi

if $check_only; then
    log "missing: ${missing[*]}"
    exit 1
fi

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    log "need root to install ${missing[*]}: run as root or install sudo"
    exit 1
fi

# `env` rather than `export`: sudo drops the caller's environment.
log "installing: ${missing[*]}"
log "running: apt-get update"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
log "running: apt-get install -y --no-install-recommends ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

find_absent_files
if [[ ${#absent[@]} -gt 0 ]]; then
    log "installed ${missing[*]} but these files are still missing:"
    printf '  %s\n' "${absent[@]}" >&2
    exit 1
fi
log "done"
